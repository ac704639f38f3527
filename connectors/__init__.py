"""Sources and sinks for evtime: kafka (aiokafka), elasticsearch (bulk HTTP), local."""
