"""Developer tools that are not part of the installed packages: the generators of committed
files (:mod:`tools.generated`, ``make generate`` / ``make verify``)."""
