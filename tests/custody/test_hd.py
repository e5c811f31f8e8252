"""BIP-32 derivation against the specification's test vectors, and public derivation (what the
wallet service does with the xpub) agreeing with private derivation (what custody signs with)."""

from __future__ import annotations

import pytest

from svc.custody.hd import (
    HARDENED,
    DerivationError,
    ExtendedPrivate,
    ExtendedPublic,
    base58check_decode,
    base58check_encode,
    evm_address,
    parse_path,
)

# BIP-32 test vectors 1, 2 and 3: (seed, [(path, xpub)]).
VECTORS = [
    (
        "000102030405060708090a0b0c0d0e0f",
        [
            (
                "m",
                "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8",
            ),
            (
                "m/0'",
                "xpub68Gmy5EdvgibQVfPdqkBBCHxA5htiqg55crXYuXoQRKfDBFA1WEjWgP6LHhwBZeNK1VTsfTFUHCdrfp1bgwQ9xv5ski8PX9rL2dZXvgGDnw",
            ),
            (
                "m/0'/1",
                "xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7SyYq527Hqck2AxYysAA7xmALppuCkwQ",
            ),
            (
                "m/0'/1/2'",
                "xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4trkrX7x7DogT5Uv6fcLW5",
            ),
            (
                "m/0'/1/2'/2",
                "xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cfN7fe5JnJ7dh8zL4fiyLHV",
            ),
            (
                "m/0'/1/2'/2/1000000000",
                "xpub6H1LXWLaKsWFhvm6RVpEL9P4KfRZSW7abD2ttkWP3SSQvnyA8FSVqNTEcYFgJS2UaFcxupHiYkro49S8yGasTvXEYBVPamhGW6cFJodrTHy",
            ),
        ],
    ),
    (
        "fffcf9f6f3f0edeae7e4e1dedbd8d5d2cfccc9c6c3c0bdbab7b4b1aeaba8a5a29f9c999693908d8a8784817e7b7875726f6c696663605d5a5754514e4b484542",
        [
            (
                "m",
                "xpub661MyMwAqRbcFW31YEwpkMuc5THy2PSt5bDMsktWQcFF8syAmRUapSCGu8ED9W6oDMSgv6Zz8idoc4a6mr8BDzTJY47LJhkJ8UB7WEGuduB",
            ),
            (
                "m/0",
                "xpub69H7F5d8KSRgmmdJg2KhpAK8SR3DjMwAdkxj3ZuxV27CprR9LgpeyGmXUbC6wb7ERfvrnKZjXoUmmDznezpbZb7ap6r1D3tgFxHmwMkQTPH",
            ),
            (
                "m/0/2147483647'",
                "xpub6ASAVgeehLbnwdqV6UKMHVzgqAG8Gr6riv3Fxxpj8ksbH9ebxaEyBLZ85ySDhKiLDBrQSARLq1uNRts8RuJiHjaDMBU4Zn9h8LZNnBC5y4a",
            ),
            (
                "m/0/2147483647'/1",
                "xpub6DF8uhdarytz3FWdA8TvFSvvAh8dP3283MY7p2V4SeE2wyWmG5mg5EwVvmdMVCQcoNJxGoWaU9DCWh89LojfZ537wTfunKau47EL2dhHKon",
            ),
            (
                "m/0/2147483647'/1/2147483646'",
                "xpub6ERApfZwUNrhLCkDtcHTcxd75RbzS1ed54G1LkBUHQVHQKqhMkhgbmJbZRkrgZw4koxb5JaHWkY4ALHY2grBGRjaDMzQLcgJvLJuZZvRcEL",
            ),
            (
                "m/0/2147483647'/1/2147483646'/2",
                "xpub6FnCn6nSzZAw5Tw7cgR9bi15UV96gLZhjDstkXXxvCLsUXBGXPdSnLFbdpq8p9HmGsApME5hQTZ3emM2rnY5agb9rXpVGyy3bdW6EEgAtqt",
            ),
        ],
    ),
    (
        "4b381541583be4423346c643850da4b320e46a87ae3d2a4e6da11eba819cd4acba45d239319ac14f863b8d5ab5a0d0c64d2e8a1e7d1457df2e5a3c51c73235be",
        [
            (
                "m",
                "xpub661MyMwAqRbcEZVB4dScxMAdx6d4nFc9nvyvH3v4gJL378CSRZiYmhRoP7mBy6gSPSCYk6SzXPTf3ND1cZAceL7SfJ1Z3GC8vBgp2epUt13",
            ),
            (
                "m/0'",
                "xpub68NZiKmJWnxxS6aaHmn81bvJeTESw724CRDs6HbuccFQN9Ku14VQrADWgqbhhTHBaohPX4CjNLf9fq9MYo6oDaPPLPxSb7gwQN3ih19Zm4Y",
            ),
        ],
    ),
]


@pytest.mark.parametrize(("seed", "chain"), VECTORS, ids=["vector-1", "vector-2", "vector-3"])
def test_bip32_vectors(seed: str, chain: list[tuple[str, str]]) -> None:
    master = ExtendedPrivate.from_seed(bytes.fromhex(seed))
    for path, xpub in chain:
        node = master.derive(parse_path(path)).neuter()
        assert node.serialize() == xpub, path
        assert ExtendedPublic.parse(xpub) == node


def test_public_derivation_agrees_with_private_derivation() -> None:
    master = ExtendedPrivate.from_seed(bytes(range(32)))
    account = master.derive(parse_path("m/44'/60'/0'"))
    xpub = ExtendedPublic.parse(account.neuter().serialize())
    for index in (0, 1, 17, 2**31 - 1):
        private = account.derive((0, index))
        public = xpub.derive((0, index))
        assert private.public_key == public.public_key and private.neuter() == public
        assert evm_address(public.public_key) == evm_address(private.public_key)
    with pytest.raises(DerivationError):
        xpub.child(HARDENED)


def test_vector_1_chain_continues_publicly_after_the_last_hardened_step() -> None:
    chain = VECTORS[0][1]
    hardened = ExtendedPublic.parse(dict(chain)["m/0'/1/2'"])
    assert hardened.derive((2, 1_000_000_000)).serialize() == dict(chain)["m/0'/1/2'/2/1000000000"]


def test_paths_encodings_and_seeds_are_checked() -> None:
    assert parse_path("m/44'/60'/0'/0/7") == (44 | HARDENED, 60 | HARDENED, HARDENED, 0, 7)
    for bad in ("44'/60'", "m/2147483648", "m/1/2/3/4/5/6/7/8/9", "m/x"):
        with pytest.raises(DerivationError):
            parse_path(bad)
    payload = b"\0\0finmesh"
    assert base58check_decode(base58check_encode(payload)) == payload
    corrupted = base58check_encode(payload)[:-1] + "2"
    with pytest.raises(DerivationError):
        base58check_decode(corrupted)
    with pytest.raises(DerivationError):
        ExtendedPrivate.from_seed(b"short")


def test_known_address_of_a_known_key() -> None:
    # The private key 1's address, a fixed point of every secp256k1 implementation.
    generator = bytes.fromhex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
    assert evm_address(generator) == "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
