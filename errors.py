"""The error types for input the user gave that cannot be used.

Each script's ``cli()`` catches ``UserError`` once and prints it as one line,
``error: <file or option>: <problem>``, with exit code 2; anything else is a bug and
keeps its traceback. The subclasses only say where the problem lies.
"""
import argparse


class UserError(Exception):
    """Input the user gave (a file, a folder, an option) that cannot be used."""


class DataError(UserError):
    """An image, a data folder or a class layout."""


class CheckpointError(UserError):
    """A checkpoint, a state_dict, an ONNX file or a class index file."""


class ArgumentError(UserError):
    """An option's value, or a combination of options."""


class OutputError(UserError):
    """An output folder or file that cannot be written, or is held by another run."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a wrong option is one line (``error: argument --epochs: invalid int
    value: 'ten'``) and exit code 2, like every other error of the scripts."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")
