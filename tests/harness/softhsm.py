"""A SoftHSM2 token for the tests: a PKCS#11 module on a token directory of its own.

`SoftHsmToken.start()` writes a SOFTHSM2_CONF naming a fresh token directory under the harness
root, initialises one token in it with a random label, user PIN and SO PIN (softhsm2-util), and
checks that the PKCS#11 module lists it. A module or tool that is missing, or a token that does
not appear, raises ServerStartError: tests that need an HSM fail, never skip.

The PKCS#11 module reads SOFTHSM2_CONF once, when it is initialised, and a process loads one
module: `activate()` points this process's environment at the token's configuration, and must run
before the first PKCS#11 call of the process (the session fixture does that).

Overridable from the environment:
    FINMESH_SOFTHSM_MODULE  the PKCS#11 module  (default /usr/lib/softhsm/libsofthsm2.so)
    FINMESH_SOFTHSM_UTIL    softhsm2-util       (default: softhsm2-util on PATH)
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .process import ServerStartError, run_tool, scratch_dir

__all__ = ["SoftHsmToken"]

MODULE_DEFAULT = "/usr/lib/softhsm/libsofthsm2.so"
CONF_ENV = "SOFTHSM2_CONF"
TOOL_TIMEOUT_S = 30.0


@dataclass
class SoftHsmToken:
    """One initialised SoftHSM2 token: where its module and configuration are, and its PINs."""

    module: str = field(default_factory=lambda: os.environ.get("FINMESH_SOFTHSM_MODULE", MODULE_DEFAULT))
    tool: str = field(default_factory=lambda: os.environ.get("FINMESH_SOFTHSM_UTIL", "softhsm2-util"))
    label: str = field(default_factory=lambda: f"finmesh-{secrets.token_hex(4)}")
    user_pin: str = field(default_factory=lambda: secrets.token_hex(8), repr=False)
    so_pin: str = field(default_factory=lambda: secrets.token_hex(8), repr=False)
    directory: Path | None = None

    @property
    def conf_path(self) -> Path:
        assert self.directory is not None, "start() first"
        return self.directory / "softhsm2.conf"

    def start(self) -> SoftHsmToken:
        """Creates the token directory, its configuration and the token; raises ServerStartError."""
        if not Path(self.module).is_file():
            raise ServerStartError(
                f"SoftHSM2: no PKCS#11 module at {self.module} (install the softhsm2 Debian package, "
                "tools/ci/install-system-packages.sh)"
            )
        tool = shutil.which(self.tool)
        if tool is None:
            raise ServerStartError(f"SoftHSM2: {self.tool} not found on PATH (Debian package softhsm2)")
        self.directory = scratch_dir("softhsm")
        tokens = self.directory / "tokens"
        tokens.mkdir()
        self.conf_path.write_text(
            f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
            "slots.removable = false\n"
        )
        environment = {**os.environ, CONF_ENV: str(self.conf_path)}
        run_tool(
            [tool, "--init-token", "--free", "--label", self.label, "--pin", self.user_pin,
             "--so-pin", self.so_pin],
            what="SoftHSM2 token initialisation", timeout=TOOL_TIMEOUT_S, env=environment,
        )  # fmt: skip
        listing = run_tool(
            [tool, "--show-slots"], what="SoftHSM2 slot listing", timeout=TOOL_TIMEOUT_S, env=environment
        )
        if self.label not in listing:
            raise ServerStartError(f"SoftHSM2: token {self.label} not listed after initialisation\n{listing}")
        return self

    def activate(self) -> None:
        """Points this process's PKCS#11 module at the token (before its first PKCS#11 call)."""
        os.environ[CONF_ENV] = str(self.conf_path)

    def close(self) -> None:
        """Removes the token directory (its keys with it)."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
