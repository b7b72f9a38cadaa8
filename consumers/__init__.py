"""AMQP consumers: decode, validate, write to the ledger, ack or dead-letter."""
