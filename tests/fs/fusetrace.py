"""Counting one connection's FUSE requests through tracefs, of one kind or
by kind.

Tracing is global to the machine: tests that count take the ctest
resource lock "tracefs" so their counts do not mix."""

import os
import re

TRACE = '/sys/kernel/tracing'
LOOKUP = 1          # FUSE opcodes, from linux/fuse.h
GETXATTR = 22


class Requests:
    """Requests with OPCODE (None: of every kind) on the FUSE connection
    behind MNT. ok is False where tracefs cannot be used (not root, no fuse
    tracepoints)."""

    def __init__(self, mnt, opcode=None):
        dev = os.stat(mnt).st_dev
        self.conn = os.minor(dev) if os.major(dev) == 0 else None
        self.opcode = opcode
        self.ok = (os.geteuid() == 0 and self.conn is not None and
                   os.path.exists(TRACE + '/events/fuse/fuse_request_send/enable'))

    def _w(self, f, v):
        with open(os.path.join(TRACE, f), 'w') as fh:
            fh.write(v)

    def start(self):
        # tracing may have been left off (tracing_on): on for the count only
        with open(os.path.join(TRACE, 'tracing_on')) as fh:
            self.was_on = fh.read().strip()
        self._w('tracing_on', '1')
        flt = 'connection == %d' % self.conn
        if self.opcode is not None:
            flt += ' && opcode == %d' % self.opcode
        self._w('events/fuse/fuse_request_send/filter', flt)
        self._w('trace', '')
        self._w('events/fuse/fuse_request_send/enable', '1')

    def by_opcode(self):
        """Ends the count: the requests seen, by opcode name
        ('FUSE_CREATE': n, ...)."""
        self._w('events/fuse/fuse_request_send/enable', '0')
        counts = {}
        with open(os.path.join(TRACE, 'trace')) as fh:
            for line in fh:
                m = re.search(r'opcode \d+ \((\w+)\)', line)
                if m and 'fuse_request_send' in line:
                    counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        self._w('events/fuse/fuse_request_send/filter', '0')
        self._w('tracing_on', self.was_on)
        return counts

    def stop(self):
        """Ends the count: how many requests."""
        return sum(self.by_opcode().values())

    def count(self, fn):
        """Requests made while fn() runs."""
        self.start()
        try:
            fn()
        finally:
            n = self.stop()
        return n
