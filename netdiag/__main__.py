from __future__ import annotations

from netdiag.cli import main

if __name__ == "__main__":
    main()
