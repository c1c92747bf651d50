"""A second milter for the existing-MX fixture (tests/e2e/mx.py), standing in for
whatever content filter a real mail server already runs next to OpenDKIM: it adds
``X-Second-Milter: seen`` to every message at end of message.

Usage: python tests/e2e/testmilter.py SOCKET   (e.g. inet:10025@127.0.0.1)
"""

from __future__ import annotations

import sys

import Milter


class SecondMilter(Milter.Base):  # type: ignore[misc]
    def eom(self) -> int:
        self.addheader("X-Second-Milter", "seen")
        return Milter.ACCEPT  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: testmilter.py SOCKET", file=sys.stderr)
        return 2
    Milter.factory = SecondMilter
    Milter.set_flags(Milter.ADDHDRS)
    print(f"second milter listening on {argv[1]}", flush=True)
    Milter.runmilter("second-milter", argv[1], 60)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
