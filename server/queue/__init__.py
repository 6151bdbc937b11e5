"""The task queue (RQ over Redis): the only package that imports RQ."""
from server.queue.tasks import TaskQueue

__all__ = ["TaskQueue"]
