"""RabbitMQ: topology, confirmed publisher, retrying consumer, outbox relay, replay."""
