from __future__ import annotations

from netdiag.entry import main

if __name__ == "__main__":
    main()
