"""A reader and writer of bbolt's page format (the B+tree file etcd keeps its backend in).

``layout`` describes the format; ``reader`` opens and checks a file; ``writer`` builds one.
"""

from kvstore.bbolt.errors import BboltError
from kvstore.bbolt.reader import BoltFile, Bucket
from kvstore.bbolt.writer import Nested, write_file

__all__ = ["BboltError", "BoltFile", "Bucket", "Nested", "write_file"]
