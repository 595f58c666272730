"""Eclipse Paho (Python) as an MQTT client we did not write, driven by test/helpers/paho.ts.

Reads one JSON session plan from argv[1], runs it against the broker and prints what Paho saw,
one JSON object per line: connack, suback, message, disconnect, error. Paho checks every property
against the packet type it arrives on (paho/mqtt/properties.py), so a property the broker puts on
the wrong packet ends the connection here and shows as a disconnect with an error.
"""
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

plan = json.loads(sys.argv[1])
version = plan.get("version", 5)
lock = threading.Lock()
messages = []
done = threading.Event()
connected = threading.Event()


def emit(event, **fields):
    with lock:
        print(json.dumps({"event": event, **fields}, default=str), flush=True)


def props_json(properties):
    # Paho's own rendering: binary properties (Correlation Data) as hex.
    return {} if properties is None else properties.json()


def code(rc):
    return rc.value if hasattr(rc, "value") else rc


def on_connect(client, userdata, flags, rc, properties=None):
    emit("connack", reasonCode=code(rc), sessionPresent=bool(flags.get("session present")), properties=props_json(properties))
    connected.set()


def on_message(client, userdata, msg):
    with lock:
        messages.append(msg)
    emit("message", topic=msg.topic, payload=msg.payload.decode("utf-8", "replace"), qos=msg.qos, retain=bool(msg.retain),
         dup=bool(msg.dup), properties=props_json(getattr(msg, "properties", None)))
    if len(messages) >= plan.get("expect", 0) > 0:
        done.set()


def on_disconnect(client, userdata, rc, properties=None):
    emit("disconnect", reasonCode=code(rc), properties=props_json(properties))
    connected.set()
    done.set()


def on_subscribe(client, userdata, mid, granted, properties=None):
    emit("suback", granted=[code(g) for g in granted])


protocol = {3: mqtt.MQTTv31, 4: mqtt.MQTTv311, 5: mqtt.MQTTv5}[version]
kwargs = {} if version == 5 else {"clean_session": plan.get("cleanStart", True)}
client = mqtt.Client(client_id=plan.get("clientId", ""), protocol=protocol, **kwargs)
client.on_connect = on_connect
client.on_message = on_message
client.on_disconnect = on_disconnect
client.on_subscribe = on_subscribe
client.max_inflight_messages_set(plan.get("maxInflight", 20))
client.max_queued_messages_set(0)

will = plan.get("will")
if will:
    will_props = None
    if version == 5 and will.get("properties"):
        will_props = Properties(PacketTypes.WILLMESSAGE)
        for name, value in will["properties"].items():
            if name == "UserProperty":
                value = [tuple(pair) for pair in value]
            elif name == "CorrelationData":
                value = value.encode()
            setattr(will_props, name, value)
    client.will_set(will["topic"], will.get("payload", ""), will.get("qos", 0), will.get("retain", False), properties=will_props)

connect_props = None
if version == 5:
    connect_props = Properties(PacketTypes.CONNECT)
    for name, value in plan.get("connectProperties", {}).items():
        setattr(connect_props, name, value)
    if not plan.get("connectProperties"):
        connect_props = None

try:
    if version == 5:
        client.connect("127.0.0.1", plan["port"], keepalive=plan.get("keepalive", 60), clean_start=plan.get("cleanStart", True), properties=connect_props)
    else:
        client.connect("127.0.0.1", plan["port"], keepalive=plan.get("keepalive", 60))
except Exception as err:  # a refused socket, not an MQTT refusal
    emit("error", message=str(err))
    sys.exit(1)

client.loop_start()
deadline = time.time() + plan.get("timeout", 10)
if not connected.wait(plan.get("timeout", 10)):
    emit("error", message="no CONNACK")

for sub in plan.get("subscribe", []):
    sub_props = None
    if version == 5 and len(sub) > 2:
        sub_props = Properties(PacketTypes.SUBSCRIBE)
        sub_props.SubscriptionIdentifier = sub[2]
    if version == 5:
        client.subscribe(sub[0], options=mqtt.SubscribeOptions(qos=sub[1]), properties=sub_props)
    else:
        client.subscribe(sub[0], sub[1])
if plan.get("subscribe"):
    emit("subscribed")
    # The test publishes once it reads the line above; give the SUBACK time to come back first.
    time.sleep(0.3)

for pub in plan.get("publish", []):
    client.publish(pub["topic"], pub.get("payload", ""), pub.get("qos", 0), pub.get("retain", False))

if plan.get("publish"):
    emit("published")

if plan.get("expect", 0) > 0 or plan.get("waitForDisconnect"):
    done.wait(max(0.0, deadline - time.time()))
elif plan.get("hold"):
    time.sleep(plan["hold"])

if plan.get("drop"):
    # Leave without DISCONNECT: the broker sees a lost connection (and publishes the will).
    client.loop_stop()
    client.socket().close()
    emit("dropped")
    sys.exit(0)

if not plan.get("waitForDisconnect"):
    client.disconnect()
client.loop_stop()
emit("end", messages=len(messages))
