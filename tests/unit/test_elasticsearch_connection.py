"""How the Elasticsearch sink reaches its cluster: several node URLs, an Elastic Cloud id,
one authentication scheme."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from evtime.connectors.elasticsearch_http import Connection, cloud_url
from evtime.errors import ConfigError


def test_several_nodes_from_a_list_or_commas_without_credentials() -> None:
    listed = Connection(["http://u:p@a:9200/", "http://b:9200"])
    assert listed.urls == ["http://a:9200", "http://b:9200"]
    assert listed.url == "http://a:9200"  # the first, until it cannot be reached
    assert listed.headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    assert Connection("http://a:9200, http://b:9200/prefix").urls == [
        "http://a:9200",
        "http://b:9200/prefix",
    ]


def test_an_elastic_cloud_id_is_the_deployments_url() -> None:
    encoded = base64.b64encode(b"eu-west-1.aws.found.io$abc123$kib456").decode()
    assert cloud_url(f"my-deployment:{encoded}") == "https://abc123.eu-west-1.aws.found.io:443"
    with_port = base64.b64encode(b"example.com:9243$es$kb").decode().rstrip("=")
    assert cloud_url(f"x:{with_port}") == "https://es.example.com:9243"
    assert Connection(cloud_id=f"d:{encoded}").url == "https://abc123.eu-west-1.aws.found.io:443"


def test_a_bearer_token_is_sent_as_such() -> None:
    assert Connection("http://a:9200", bearer_token="t").headers["Authorization"] == "Bearer t"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "http://a:9200", "cloud_id": "x:eA=="}, "url or its cloud_id, not both"),
        ({"cloud_id": "not base64!"}, "is not an Elastic Cloud id"),
        ({"url": " , "}, "no url"),
        ({"url": ["http://a:9200", "https://b:9200"]}, "mix http:// and https://"),
        ({"url": "http://a:9200", "api_key": "k", "bearer_token": "t"},
         "use api_key or bearer_token, not both"),
        ({"url": "http://u:p@a:9200", "bearer_token": "t"}, "not both"),
    ],
)  # fmt: skip
def test_settings_that_cannot_work_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Connection(**kwargs)
