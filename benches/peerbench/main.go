// peerbench: the peer side of benches/peers.sh. It loads NATS JetStream and
// Mosquitto the way `eddy bench produce` and `eddy bench devices` load eddy,
// and prints one JSON object with the same fields, so the script can put
// them side by side.
//
//	peerbench nats-ingest  -url tls://127.0.0.1:17520 -ca ca.pem -producers 8 -window 1 -duration-s 5
//	peerbench mqtt-devices -url ssl://127.0.0.1:17530 -ca ca.pem -connections 1000 -interval-ms 1000 -duration-s 20
//	peerbench mqtt-publisher -url tcp://127.0.0.1:17530 -inflight 1000 -duration-s 10
//
// Clients: the NATS and Eclipse Paho Go clients as packaged in Debian 12
// (golang-github-nats-io-go-nats-dev, golang-github-eclipse-paho.mqtt.golang-dev),
// the official clients of both projects. Built in GOPATH mode, no downloads.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: peerbench nats-ingest|mqtt-devices|mqtt-publisher [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "nats-ingest":
		natsIngest(os.Args[2:])
	case "mqtt-devices":
		mqttDevices(os.Args[2:])
	case "mqtt-publisher":
		mqttPublisher(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "unknown benchmark %q\n", os.Args[1])
		os.Exit(2)
	}
}

// percentiles returns nearest-rank p50, p99 and max of latencies in ms.
func percentiles(lat []time.Duration) (float64, float64, float64) {
	if len(lat) == 0 {
		return 0, 0, 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	rank := func(q float64) float64 {
		i := int(q*float64(len(lat))+0.999999) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(lat) {
			i = len(lat) - 1
		}
		return float64(lat[i].Microseconds()) / 1000
	}
	return rank(0.50), rank(0.99), float64(lat[len(lat)-1].Microseconds()) / 1000
}

func tlsConfig(ca string) *tls.Config {
	pem, err := os.ReadFile(ca)
	if err != nil {
		fail("read CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		fail("no certificate in %s", ca)
	}
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "peerbench: "+format+"\n", args...)
	os.Exit(1)
}

func emit(v map[string]interface{}) {
	out, _ := json.Marshal(v)
	fmt.Println(string(out))
}

// natsIngest: P publishers, each on its own connection, publish 100-byte
// messages to a file-store stream and wait for publish acks: one at a time
// (-window 1) or with up to -window acks outstanding (PublishAsync).
func natsIngest(args []string) {
	fs := flag.NewFlagSet("nats-ingest", flag.ExitOnError)
	url := fs.String("url", "tls://127.0.0.1:17520", "server")
	ca := fs.String("ca", "", "CA certificate (PEM) for TLS")
	producers := fs.Int("producers", 1, "publishers, one connection each")
	window := fs.Int("window", 1, "acks outstanding per publisher (1 = sync)")
	size := fs.Int("record-bytes", 100, "message size")
	duration := fs.Int("duration-s", 5, "seconds")
	stream := fs.String("stream", "BENCH", "stream name")
	fs.Parse(args)

	opts := []nats.Option{}
	if *ca != "" {
		opts = append(opts, nats.Secure(tlsConfig(*ca)))
	}
	admin, err := nats.Connect(*url, opts...)
	if err != nil {
		fail("connect: %v", err)
	}
	ajs, err := admin.JetStream()
	if err != nil {
		fail("jetstream: %v", err)
	}
	if _, err := ajs.AddStream(&nats.StreamConfig{
		Name: *stream, Subjects: []string{*stream + ".>"}, Storage: nats.FileStorage,
	}); err != nil {
		fail("add stream: %v", err)
	}

	payload := make([]byte, *size)
	var records int64
	var mu sync.Mutex
	var all []time.Duration
	var errors int64
	deadline := time.Now().Add(time.Duration(*duration) * time.Second)
	start := time.Now()
	var wg sync.WaitGroup
	for p := 0; p < *producers; p++ {
		nc, err := nats.Connect(*url, opts...)
		if err != nil {
			fail("connect: %v", err)
		}
		js, err := nc.JetStream(nats.PublishAsyncMaxPending(*window))
		if err != nil {
			fail("jetstream: %v", err)
		}
		subject := fmt.Sprintf("%s.p%d", *stream, p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer nc.Close()
			var lat []time.Duration
			if *window <= 1 {
				for time.Now().Before(deadline) {
					sent := time.Now()
					if _, err := js.Publish(subject, payload); err != nil {
						atomic.AddInt64(&errors, 1)
						continue
					}
					lat = append(lat, time.Since(sent))
				}
			} else {
				type pending struct {
					f    nats.PubAckFuture
					sent time.Time
				}
				queue := make(chan pending, *window)
				done := make(chan []time.Duration)
				go func() {
					var l []time.Duration
					for p := range queue {
						select {
						case <-p.f.Ok():
							l = append(l, time.Since(p.sent))
						case <-p.f.Err():
							atomic.AddInt64(&errors, 1)
						}
					}
					done <- l
				}()
				for time.Now().Before(deadline) {
					sent := time.Now()
					f, err := js.PublishAsync(subject, payload)
					if err != nil {
						atomic.AddInt64(&errors, 1)
						continue
					}
					queue <- pending{f, sent}
				}
				close(queue)
				lat = <-done
			}
			atomic.AddInt64(&records, int64(len(lat)))
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	admin.Close()
	p50, p99, max := percentiles(all)
	emit(map[string]interface{}{
		"bench": "nats-ingest", "records": records, "seconds": elapsed,
		"records_per_s": float64(records) / elapsed, "p50_ms": p50, "p99_ms": p99, "max_ms": max,
		"producers": *producers, "window": *window, "record_bytes": *size, "errors": errors,
	})
}

// mqttDevices: N MQTT clients, each on its own connection, publish one small
// reading per interval with QoS 1 and wait for the PUBACK, as
// `eddy bench devices` does with eddy.
func mqttDevices(args []string) {
	fs := flag.NewFlagSet("mqtt-devices", flag.ExitOnError)
	url := fs.String("url", "ssl://127.0.0.1:17530", "broker")
	ca := fs.String("ca", "", "CA certificate (PEM) for TLS")
	connections := fs.Int("connections", 1000, "devices, one connection each")
	interval := fs.Int("interval-ms", 1000, "ms between readings of one device")
	duration := fs.Int("duration-s", 20, "seconds measured once all are connected")
	size := fs.Int("value-bytes", 64, "reading size")
	concurrency := fs.Int("connect-concurrency", 64, "connections set up at once")
	serverPid := fs.Int("server-pid", 0, "broker pid, to report its RSS while every device is connected")
	fs.Parse(args)

	var tlsConf *tls.Config
	if *ca != "" {
		tlsConf = tlsConfig(*ca)
	}
	n := *connections
	clients := make([]mqtt.Client, n)
	slots := make(chan struct{}, *concurrency)
	var setupFailed int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		slots <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-slots }()
			o := mqtt.NewClientOptions().AddBroker(*url).
				SetClientID(fmt.Sprintf("bench-device-%d", i)).
				SetCleanSession(true).SetAutoReconnect(false).
				SetConnectTimeout(30 * time.Second).SetKeepAlive(60 * time.Second)
			if tlsConf != nil {
				o.SetTLSConfig(tlsConf)
			}
			c := mqtt.NewClient(o)
			t := c.Connect()
			if !t.WaitTimeout(30*time.Second) || t.Error() != nil {
				atomic.AddInt64(&setupFailed, 1)
				return
			}
			clients[i] = c
		}(i)
	}
	wg.Wait()
	setup := time.Since(start).Seconds()
	connected := int64(n) - setupFailed

	iv := time.Duration(*interval) * time.Millisecond
	begin := time.Now().Add(100 * time.Millisecond)
	end := begin.Add(time.Duration(*duration) * time.Second)
	payload := make([]byte, *size)
	// The broker's RSS while every device is connected and sending, as
	// eddy bench devices reads it: every second and just before the end.
	rssDone := make(chan int64, 1)
	go func() {
		if *serverPid == 0 {
			rssDone <- 0
			return
		}
		time.Sleep(time.Until(begin))
		max := rssKb(*serverPid)
		for {
			last := time.Until(end) <= time.Second
			if last {
				time.Sleep(time.Until(end.Add(-50 * time.Millisecond)))
			} else {
				time.Sleep(time.Second)
			}
			if r := rssKb(*serverPid); r > max {
				max = r
			}
			if last {
				rssDone <- max
				return
			}
		}
	}()
	var mu sync.Mutex
	var all []time.Duration
	var sent, errors, late int64
	for i := 0; i < n; i++ {
		if clients[i] == nil {
			continue
		}
		wg.Add(1)
		go func(i int, c mqtt.Client) {
			defer wg.Done()
			topic := fmt.Sprintf("devices/%d", i)
			next := begin.Add(iv * time.Duration(i) / time.Duration(n))
			var lat []time.Duration
			for next.Before(end) {
				now := time.Now()
				if now.Before(next) {
					time.Sleep(next.Sub(now))
				} else if now.After(next.Add(iv)) {
					atomic.AddInt64(&late, 1)
				}
				next = next.Add(iv)
				t0 := time.Now()
				tok := c.Publish(topic, 1, false, payload)
				atomic.AddInt64(&sent, 1)
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					atomic.AddInt64(&errors, 1)
					return
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}(i, clients[i])
	}
	wg.Wait()
	rss := <-rssDone
	for _, c := range clients {
		if c != nil {
			c.Disconnect(0)
		}
	}
	p50, p99, max := percentiles(all)
	emit(map[string]interface{}{
		"bench": "mqtt-devices", "connections": n, "connected": connected,
		"setup_s": setup, "setup_per_s": float64(connected) / setup,
		"interval_ms": *interval, "duration_s": *duration, "value_bytes": *size,
		"acked": len(all), "acked_per_s": float64(len(all)) / float64(*duration),
		"errors": errors + setupFailed, "late": late, "sent": sent,
		"p50_ms": p50, "p99_ms": p99, "max_ms": max, "server_rss_kb": rss,
	})
}

// mqttPublisher: one MQTT client publishing QoS 1 messages as fast as the
// broker acknowledges them, with up to -inflight unacknowledged.
func mqttPublisher(args []string) {
	fs := flag.NewFlagSet("mqtt-publisher", flag.ExitOnError)
	url := fs.String("url", "tcp://127.0.0.1:17530", "broker")
	ca := fs.String("ca", "", "CA certificate (PEM) for TLS")
	inflight := fs.Int("inflight", 1000, "messages unacknowledged at most")
	duration := fs.Int("duration-s", 10, "seconds measured")
	size := fs.Int("value-bytes", 100, "message size")
	serverPid := fs.Int("server-pid", 0, "broker pid, to report its RSS at the end")
	fs.Parse(args)

	o := mqtt.NewClientOptions().AddBroker(*url).SetClientID("bench-publisher").
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(30 * time.Second).
		SetKeepAlive(60 * time.Second).SetWriteTimeout(30 * time.Second)
	if *ca != "" {
		o.SetTLSConfig(tlsConfig(*ca))
	}
	c := mqtt.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(30*time.Second) || t.Error() != nil {
		fmt.Fprintln(os.Stderr, "connect failed:", t.Error())
		os.Exit(1)
	}
	payload := make([]byte, *size)
	slots := make(chan struct{}, *inflight)
	end := time.Now().Add(time.Duration(*duration) * time.Second)
	var mu sync.Mutex
	var all []time.Duration
	var errors int64
	var wg sync.WaitGroup
	start := time.Now()
	for time.Now().Before(end) {
		slots <- struct{}{}
		wg.Add(1)
		t0 := time.Now()
		tok := c.Publish("bench/publisher", 1, false, payload)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				atomic.AddInt64(&errors, 1)
				return
			}
			d := time.Since(t0)
			mu.Lock()
			all = append(all, d)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	rss := rssKb(*serverPid)
	c.Disconnect(0)
	p50, p99, max := percentiles(all)
	emit(map[string]interface{}{
		"bench": "mqtt-publisher", "inflight": *inflight, "duration_s": elapsed,
		"value_bytes": *size, "acked": len(all), "acked_per_s": float64(len(all)) / elapsed,
		"errors": errors, "p50_ms": p50, "p99_ms": p99, "max_ms": max, "server_rss_kb": rss,
	})
}

// rssKb is VmRSS of process pid in kB (0 when unreadable).
func rssKb(pid int) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%d", &kb)
			return kb
		}
	}
	return 0
}
