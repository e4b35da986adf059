"""dbnexus benchmark suite: dbnexus against the raw drivers, SQLAlchemy and Tortoise ORM.

Run ``python -m benchmarks --help``; ``benchmarks/README.md`` explains the cases and columns.
"""
