"""Fault tests run against the real services, with the integration tests' fixtures."""

from tests.integration.conftest import kafka_bootstrap, opensearch_url, unique_name

__all__ = ["kafka_bootstrap", "opensearch_url", "unique_name"]
