"""The broker layer: topology, connections, the outbox relay and the consume loop.

RabbitMQ in production (``amqp://``), kombu's in-process ``memory://`` transport as the
embedded default; the same code runs on both.
"""
