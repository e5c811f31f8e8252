"""`python -m tools.demo` (`make demo`): the custodial wallet, end to end, on the embedded defaults."""

from __future__ import annotations

import sys

from tools.demo.show import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
