"""The command line (`digitserve`) and process control."""
from server.cli.main import main

__all__ = ["main"]
