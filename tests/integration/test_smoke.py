"""The first thing that must work: a GET through weir -c, and the built-in demo."""
import http.client
import json

from conftest import free_port, proxy_config


def test_get_through_config(weir, origin):
    port = free_port()
    weir(proxy_config(port, [origin.port]), port=port)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/hello?x=1")
    r = c.getresponse()
    body = json.loads(r.read())
    assert r.status == 200
    assert body["target"] == "/hello?x=1"
    names = [k.lower() for k, _ in body["headers"]]
    assert "x-forwarded-for" in names and "via" in names
