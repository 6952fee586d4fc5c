"""The playbook runner: alerts in, guarded and audited actions out (`driftline playbooks`).

`engine.PlaybookEngine` holds the decision logic in plain Python; `runner.PlaybookRunner` is
the Kafka shell around it. See README.md in this folder.
"""
