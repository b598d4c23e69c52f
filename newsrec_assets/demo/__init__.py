"""`newsrec demo`: the whole system on one machine, started in the order a newcomer needs it.

The supervisor (`supervisor.py`) imports neither dagster nor torch: it starts the services as
child processes, talks to Dagster over its GraphQL HTTP API (`dagster_client.py`) and keeps a
compact status on the terminal while every log goes to `var/logs/`.
"""
