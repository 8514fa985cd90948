"""What a user calls: the Python API (client), the engine's commands (cli), the checks every face
shares (plans), summaries of a run (summary) and log formats (logs).
"""
