#!/usr/bin/env node
// MQTT.js (npm `mqtt`, pinned in package.json / package-lock.json) as a
// command-line client for tests/mqtt_clients.rs, with the same commands
// as paho_client.py:
//
//   mqttjs_client.js PORT VERSION publish CLIENT_ID TOPIC QOS RETAIN PAYLOAD...
//   mqttjs_client.js PORT VERSION subscribe CLIENT_ID PERSISTENT FILTER QOS COUNT
//   mqttjs_client.js PORT VERSION will CLIENT_ID TOPIC PAYLOAD
//
// Every wait is bounded (WAIT_MS); a failure exits non-zero.
'use strict';

const mqtt = require('mqtt');

const WAIT_MS = 20000;
const SESSION_EXPIRY_S = 3600;

// Set once the client ends on purpose: errors after it (a reset
// connection) are not failures.
let ending = false;

function fail(why) {
  if (ending) return;
  process.stderr.write(why + '\n');
  process.exit(1);
}

function end(client, code) {
  ending = true;
  client.end(false, () => process.exit(code));
}

function connect(port, version, clientId, persistent, will, onMessage) {
  const v5 = version === '5';
  const options = {
    host: '127.0.0.1',
    port,
    clientId,
    protocolVersion: v5 ? 5 : 4,
    clean: !persistent,
    keepalive: 30,
    reconnectPeriod: 0,
    connectTimeout: WAIT_MS,
  };
  if (v5 && persistent) {
    options.properties = { sessionExpiryInterval: SESSION_EXPIRY_S };
  }
  if (will) {
    options.will = { topic: will[0], payload: Buffer.from(will[1]), qos: 1, retain: false };
  }
  const client = mqtt.connect(options);
  // Before CONNACK: a resumed session's messages may come right after it.
  if (onMessage) client.on('message', onMessage);
  const timer = setTimeout(() => fail('no CONNACK'), WAIT_MS);
  return new Promise((resolve) => {
    client.once('connect', () => {
      clearTimeout(timer);
      resolve(client);
    });
    client.on('error', (e) => fail('error: ' + e.message));
  });
}

// Resolves with whether the broker acknowledged it (a refusal is a
// reason code in MQTT 5, a closed connection in 3.1.1).
function publishOne(client, topic, payload, qos, retain) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), WAIT_MS);
    client.once('close', () => resolve(false));
    client.publish(topic, payload, { qos, retain }, (err) => {
      clearTimeout(timer);
      resolve(!err);
    });
  });
}

async function publish(port, version, clientId, topic, qos, retain, payloads) {
  const client = await connect(port, version, clientId, false);
  client.removeAllListeners('error');
  client.on('error', () => {});
  for (const payload of payloads) {
    const ok = await publishOne(client, topic, payload, Number(qos), retain === '1');
    console.log((ok ? 'acked ' : 'refused ') + payload);
    if (!ok) break;
  }
  end(client, 0);
}

async function subscribe(port, version, clientId, persistent, filter, qos, count) {
  const got = [];
  const want = Number(count);
  let finished = false;
  let client = null;
  let timer = null;
  const finish = () => {
    if (finished || !client) return;
    finished = true;
    clearTimeout(timer);
    got.forEach((line) => console.log(line));
    end(client, got.length >= want ? 0 : 1);
  };
  const onMessage = (topic, payload) => {
    got.push(topic + ' ' + payload.toString());
    if (want > 0 && got.length >= want) finish();
  };
  client = await connect(port, version, clientId, persistent === '1', null, onMessage);
  if (got.length >= want && want > 0) finish();
  timer = setTimeout(finish, WAIT_MS);
  client.subscribe(filter, { qos: Number(qos) }, (err) => {
    if (err) fail('SUBSCRIBE failed: ' + err.message);
    if (want === 0) finish();
  });
}

async function will(port, version, clientId, topic, payload) {
  await connect(port, version, clientId, false, [topic, payload]);
  console.log('connected');
  process.exit(0); // no DISCONNECT: the socket just closes
}

const [port, version, command, ...rest] = process.argv.slice(2);
if (command === 'publish') {
  const [clientId, topic, qos, retain, ...payloads] = rest;
  publish(Number(port), version, clientId, topic, qos, retain, payloads);
} else if (command === 'subscribe') {
  subscribe(Number(port), version, ...rest);
} else if (command === 'will') {
  will(Number(port), version, ...rest);
} else {
  fail('unknown command ' + command);
}
