"""The task-process side: the zygote, the task processes it forks, the wire between them and the
supervisor, output capture, the task protocol and the built-in kinds. Nothing here loads
SQLAlchemy, the storage layer, the supervisor or the web stack (tests/unit/test_structure.py).
"""
