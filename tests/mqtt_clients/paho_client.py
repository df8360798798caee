#!/usr/bin/env python3
"""Eclipse paho-mqtt (PyPI, v2 API) as a command-line client for
tests/mqtt_clients.rs; mqttjs_client.js takes the same commands.

  paho_client.py PORT VERSION publish CLIENT_ID TOPIC QOS RETAIN PAYLOAD...
      prints `acked PAYLOAD` or `refused PAYLOAD` per message
  paho_client.py PORT VERSION subscribe CLIENT_ID PERSISTENT FILTER QOS COUNT
      prints `TOPIC PAYLOAD` per message (COUNT 0: none, after the SUBACK)
  paho_client.py PORT VERSION will CLIENT_ID TOPIC PAYLOAD
      connects with a will, then dies without DISCONNECT

VERSION: 3 (MQTT 3.1.1) or 5. Every wait is bounded (WAIT_S); a failure is
a non-zero exit with the reason on stderr.
"""

import os
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT_S = 20
SESSION_EXPIRY_S = 3600


def client(port, version, client_id, persistent, will=None, on_message=None):
    v5 = version == "5"
    kwargs = {"client_id": client_id, "protocol": mqtt.MQTTv5 if v5 else mqtt.MQTTv311}
    if not v5:
        kwargs["clean_session"] = not persistent
    c = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
    if will:
        c.will_set(will[0], will[1], qos=1)
    # Before CONNECT: a resumed session's messages may come right after
    # CONNACK, and paho acknowledges a message it has no callback for.
    if on_message:
        c.on_message = on_message
    connected = threading.Event()
    c.on_connect = lambda c, u, flags, rc, props=None: connected.set()
    if v5:
        props = Properties(PacketTypes.CONNECT)
        if persistent:
            props.SessionExpiryInterval = SESSION_EXPIRY_S
        c.connect("127.0.0.1", port, 30, clean_start=not persistent, properties=props)
    else:
        c.connect("127.0.0.1", port, 30)
    c.loop_start()
    if not connected.wait(WAIT_S):
        sys.exit("no CONNACK")
    return c


def publish(port, version, client_id, topic, qos, retain, payloads):
    c = client(port, version, client_id, False)
    acks = {}
    done = threading.Condition()

    def on_publish(c, u, mid, reason_code, props):
        with done:
            acks[mid] = not reason_code.is_failure
            done.notify_all()

    def on_disconnect(c, u, flags, reason_code, props):
        with done:
            done.notify_all()

    c.on_publish = on_publish
    c.on_disconnect = on_disconnect
    for payload in payloads:
        info = c.publish(topic, payload, qos=int(qos), retain=retain == "1")
        with done:
            # A refused QoS 1/2 publish: a reason code (MQTT 5) or the
            # connection closed (3.1.1).
            done.wait_for(lambda: info.mid in acks or not c.is_connected(), WAIT_S)
            ok = acks.get(info.mid, False)
        print(("acked " if ok else "refused ") + payload, flush=True)
        if not ok:
            break
    c.disconnect()
    c.loop_stop()


def subscribe(port, version, client_id, persistent, filt, qos, count):
    got = []
    lock = threading.Condition()
    subscribed = threading.Event()

    def on_message(c, u, m):
        with lock:
            got.append(m.topic + " " + m.payload.decode())
            lock.notify_all()

    c = client(port, version, client_id, persistent == "1", on_message=on_message)
    c.on_subscribe = lambda c, u, mid, codes, props: subscribed.set()
    c.subscribe(filt, qos=int(qos))
    if not subscribed.wait(WAIT_S):
        sys.exit("no SUBACK")
    with lock:
        lock.wait_for(lambda: len(got) >= int(count), WAIT_S)
        for line in got:
            print(line, flush=True)
    c.disconnect()
    c.loop_stop()
    if len(got) < int(count):
        sys.exit(f"{len(got)} of {count} messages")


def will(port, version, client_id, topic, payload):
    client(port, version, client_id, False, will=(topic, payload))
    print("connected", flush=True)
    os._exit(0)  # no DISCONNECT: the socket just closes


def main(argv):
    port, version, command, *rest = argv
    port = int(port)
    if command == "publish":
        client_id, topic, qos, retain, *payloads = rest
        publish(port, version, client_id, topic, qos, retain, payloads)
    elif command == "subscribe":
        subscribe(port, version, *rest)
    elif command == "will":
        will(port, version, *rest)
    else:
        sys.exit("unknown command " + command)


if __name__ == "__main__":
    main(sys.argv[1:])
