"""The supervisor's side: the process that claims, leases and heartbeats tasks, places their
attempts in task processes, judges who is dead, and ends every attempt through one path
(:mod:`service.supervisor.endings`). Never imported by task processes.
"""
