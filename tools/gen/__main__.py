"""`python -m tools.gen`: regenerate everything under gen/ and the contracts page."""

from tools.gen import deps, python_sdk


def main() -> None:
    deps.collect()
    python_sdk.generate_python()
    python_sdk.generate_descriptor_set()
    # Imported late: they read the descriptor set written just above.
    from tools.gen import contracts_doc, openapi

    openapi.generate()
    contracts_doc.generate()


if __name__ == "__main__":
    main()
