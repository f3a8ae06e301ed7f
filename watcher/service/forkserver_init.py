"""Imported once, by the worker pool's forkserver only (its preload list): stacking processes ignore the
signals that a terminal or ``kill -- -PGID`` sends to the whole process group.

Ctrl-C in a terminal sends SIGINT to every process of the foreground group, and ``kill -TERM -PGID`` SIGTERM:
the forkserver and the workers would die with the daemon's running stacks, while the daemon believes it is
letting them finish. Only the daemon decides when a stack stops (it kills a worker outright when it must).

The forkserver restores, in every process it forks, the signal dispositions it had before it set up its own,
and those are the ones set here -- so a worker ignores these signals from its first instruction, not from the
moment its code starts running. This is why it is a module of its own: importing it anywhere else (the daemon,
a test) would make that process deaf to Ctrl-C.
"""

import signal

for _signal in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signal, signal.SIG_IGN)
