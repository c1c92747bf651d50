"""Deliveries: Postfix's own per-recipient delivery results, read from its log.

:mod:`.logline` turns one log line (or one journald MESSAGE) into a result;
:mod:`.follow` reads a log file line by line across rotations and restarts, with a
cursor the caller stores next to what it derived from the lines.
"""
