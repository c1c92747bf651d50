"""Exit statuses, from sysexits(3) as Postfix and sendmail tools use them."""

from __future__ import annotations

OK = 0
FAILURE = 1
USAGE = 64  # EX_USAGE: bad command line
DATAERR = 65  # EX_DATAERR: bad input (invalid name, duplicate login)
NOUSER = 67  # EX_NOUSER: no such login
UNAVAILABLE = 69  # EX_UNAVAILABLE: a needed service (store, postfix) is not available
SOFTWARE = 70  # EX_SOFTWARE: internal error
TEMPFAIL = 75  # EX_TEMPFAIL: try again later
CONFIG = 78  # EX_CONFIG: the config file is wrong
