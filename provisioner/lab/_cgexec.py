"""Tiny exec helper: join cgroups, then exec a program (so the program starts inside them).

usage: python -I _cgexec.py CGROUP_PROCS_FILE... -- PROGRAM ARG...
Run by path (stdlib only) so the join happens before the program forks anything: systemd-nspawn's
children inherit the node's own cgroups, and its PID is this process's PID.
"""

import os
import sys


def main() -> None:
    args = sys.argv[1:]
    sep = args.index("--")
    for procs_file in args[:sep]:
        with open(procs_file, "w") as fh:
            fh.write(str(os.getpid()))
    os.execvp(args[sep + 1], args[sep + 1 :])


if __name__ == "__main__":
    main()
