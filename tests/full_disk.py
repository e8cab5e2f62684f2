"""A disk filling up, for the tests of both packages' writers (tests/ is on sys.path through its conftest)."""
import os


class FailingFile:
    """A real file whose writes fail with `error_number` after `budget` bytes (a disk filling up)."""

    def __init__(self, f, error_number, budget):
        self.f, self.error_number, self.budget = f, error_number, budget

    def write(self, data):
        """Write while the budget lasts, then fail as the OS does."""
        if len(data) > self.budget:
            raise OSError(self.error_number, os.strerror(self.error_number))
        self.budget -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
