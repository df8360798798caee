// KafkaJS (a pure-JavaScript Kafka client) against eddy: a producer sends
// 100 keyed records with headers (acks=all), then a consumer group reads
// every record of the topic from the beginning, commits, and leaves.
// Prints one JSON line per record read, then "done".
// Usage: node produce_and_consume.js BROKER TOPIC GROUP EXPECTED
const { Kafka, logLevel } = require('kafkajs');

const [broker, topic, groupId, expected] = process.argv.slice(2);
const kafka = new Kafka({ clientId: 'kafkajs-test', brokers: [broker], logLevel: logLevel.WARN });

async function main() {
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < 100; i++) {
    messages.push({ key: `k${i % 7}`, value: `js${i}`, headers: { n: `${i}` } });
  }
  await producer.send({ topic, acks: -1, messages });
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let seen = 0;
  const finished = new Promise((resolve) => {
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        console.log(JSON.stringify({
          partition, offset: message.offset, key: message.key && message.key.toString(),
          value: message.value.toString(), n: message.headers.n && message.headers.n.toString(),
        }));
        seen += 1;
        if (seen >= Number(expected)) resolve();
      },
    });
  });
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error(`read ${seen} of ${expected}`)), 60000));
  await Promise.race([finished, timeout]);
  await consumer.disconnect();
  console.log('done');
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
