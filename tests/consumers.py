"""Per-bin consumers for tests of the inference core."""
import numpy as np


class Collect:
    """Keeps every chunk it is sent; checks they arrive in ascending order."""

    def __init__(self):
        self.parts = []
        self.restarts = 0

    def chunk(self, start, gamma, boundary, change):
        assert start == sum(len(p[1]) for p in self.parts), "chunks must arrive in ascending order"
        self.parts.append((gamma.copy(), boundary.copy(), change.copy()))

    def restart(self):
        self.parts = []
        self.restarts += 1

    def arrays(self):
        """(gamma, boundary, change) over the whole contig."""
        return tuple(np.concatenate([p[i] for p in self.parts]) for i in range(3))
