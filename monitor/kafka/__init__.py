"""Kafka for every part of Driftline: client settings per broker profile (`settings`), the topics
(`topics`) and the embedded broker (`broker`). The worker (`monitor.stream`), the publisher
(`monitor.client`), the playbook runner and `explain` import these, not each other."""
