/**
 * Every default FleetMQ uses, in one place, with its unit. The schema in `schema.ts` applies them;
 * nothing else in the broker hard-codes a limit or a port.
 */
export const DEFAULT_PORTS = Object.freeze({
  mqtt: 1883,
  mqtts: 8883,
  ws: 8083,
  wss: 8084,
  mgmt: 18083,
})

export const DEFAULTS = Object.freeze({
  /** Interface the default listeners bind to. */
  host: '0.0.0.0',
  /** WebSocket path, as most MQTT-over-WebSocket clients expect. */
  wsPath: '/mqtt',
  /** Folder for the user store and local state. */
  dataDir: '/var/lib/fleetmq',
  limits: Object.freeze({
    /** Connected clients on this node, all listeners together (0 = unlimited). */
    maxConnections: 100_000,
    /** Largest MQTT packet accepted, bytes. Advertised to 5.0 clients as Maximum Packet Size. */
    maxPacketSize: 1_048_576,
    /** Unacknowledged QoS 1/2 messages the broker sends a client before waiting (Receive Maximum of the broker side). */
    maxInflight: 100,
    /**
     * QoS 1/2 PUBLISH packets a 5.0 client may have unacknowledged towards this node, count
     * (QoS 2 until the node sends PUBCOMP). Advertised in CONNACK as Receive Maximum; a client
     * that sends more is disconnected with 0x93. 3.1.1 has no such limit.
     */
    receiveMaximum: 100,
    /** QoS 1/2 messages queued for a subscriber while it is slow (see slowConsumerBytes) before it is disconnected, count (0 = no limit). */
    maxQueued: 1_000,
    /** Bytes buffered for a slow subscriber before its QoS 0 messages are dropped. */
    slowConsumerBytes: 1_048_576,
    /**
     * Bytes a subscriber may fall behind (unsent in its socket plus QoS 0 dropped since it last caught
     * up) before it is disconnected with 0x97: it stopped reading.
     */
    stuckConsumerBytes: 8_388_608,
    /** Levels in a topic name or filter. */
    maxTopicLevels: 32,
    /** UTF-8 bytes in a topic name or filter. */
    maxTopicLength: 1_024,
    /**
     * Shortest non-zero keep-alive accepted, seconds (0 = no minimum). 5.0 clients below it get it
     * as Server Keep Alive; 3.1/3.1.1 clients are refused.
     */
    minKeepAlive: 0,
    /**
     * Longest non-zero keep-alive accepted, seconds. 300 s because the AWS NLB's TLS listener drops
     * idle connections after 350 s: a client pinging less often would be cut silently. 5.0 clients
     * above it get it as Server Keep Alive; 3.1/3.1.1 clients are refused. A keep-alive of 0
     * (disabled) is not bounded by it: see serverKeepAlive and refuseKeepAliveZero.
     */
    maxKeepAlive: 300,
    /**
     * Server Keep Alive sent to 5.0 clients that ask for a keep-alive of 0 (disabled), seconds
     * (0 = none: their keep-alive stays off, as they asked). Set it behind a load balancer that drops
     * idle connections (the AWS deployment sets 300 for the NLB's 350 s).
     */
    serverKeepAlive: 0,
    /**
     * Refuse 3.1/3.1.1 clients that ask for a keep-alive of 0 (disabled), with CONNACK 3 Server
     * unavailable (3.1.1 cannot tell a client which keep-alive to use). Off by default: Keep Alive
     * 0 is legal (3.1.1 §3.1.2.10) and mosquitto, EMQX and VerneMQ accept it. 5.0
     * clients are never refused: they get serverKeepAlive.
     */
    refuseKeepAliveZero: false,
    /**
     * Topic aliases a 5.0 client may register with the broker, and the most the broker sets up
     * towards a client that allows them (fewer when the client's Topic Alias Maximum is lower).
     */
    topicAliasMaximum: 64,
    /** Longest session expiry a 5.0 client may ask for, seconds (7 days). */
    maxSessionExpiry: 604_800,
    /**
     * New connections per second from one source address (the client's, through PROXY protocol),
     * bursts of one second's worth; beyond: CONNACK 0x9F (0 = unlimited). Above what one device
     * reconnecting needs, below what lets one source take the listener's whole connectRate.
     */
    connectRatePerAddress: 50,
    /**
     * Failed logins in a row from one address before it is made to wait (1 s, doubling while it
     * goes on failing); 0 = never.
     */
    loginFailuresBeforeBackoff: 5,
    /** Longest wait after failed logins, seconds. */
    maxLoginBackoff: 60,
    /**
     * Sources that connectRatePerAddress and the login backoff leave alone: processes on the node
     * itself. Behind a proxy that sends no PROXY protocol every client has the proxy's address:
     * add it here (or set connectRatePerAddress 0).
     */
    rateExemptAddresses: Object.freeze(['127.0.0.0/8', '::1']) as readonly string[],
    /** Client identifier length, characters. */
    maxClientIdLength: 128,
    /** Seconds a connection may take to send CONNECT. */
    connectTimeout: 10,
  }),
  /** New connections a listener accepts per second before refusing (0 = unlimited). */
  connectRate: 500,
  /** Seconds SIGTERM waits for clients to be told and sessions to be flushed. */
  shutdownTimeout: 10,
  cluster: Object.freeze({
    /** Cluster name: a node refuses to join a cluster of another name. */
    name: 'fleetmq',
    /** Seconds between membership heartbeats. */
    heartbeatInterval: 2,
    /** Seconds without a heartbeat after which a node is reported down. */
    downAfter: 10,
    /** Cluster management requests per second per remote address (token bucket refill rate). */
    mgmtRate: 5,
    /** Burst of cluster management requests per remote address (token bucket size). */
    mgmtBurst: 20,
    /**
     * Messages published to Redis and not yet acknowledged by it, per node: beyond it QoS 0
     * messages are dropped (`fleetmq_messages_dropped_total{reason="overload"}`) and publishers of
     * QoS 1/2 wait (their sockets are not read: TCP backpressure).
     */
    overloadPendingPublishes: 5_000,
    /**
     * Bytes written to this node's subscribers and not yet sent (all connections): beyond it,
     * QoS 0 messages arriving from other nodes are dropped (counted as above).
     */
    overloadBufferedBytes: 64 * 1024 * 1024,
    /**
     * QoS 1/2 messages waiting for this node's subscribers' in-flight windows, all together: beyond
     * it the node is congested: its own publishers and every other node's messages for it are held
     * (their sockets are not read, no PUBACK) until it is back under half of it.
     */
    overloadQueuedMessages: 20_000,
    /** Seconds a hold must last before QoS 0 messages are dropped instead of held (sustained overload). */
    overloadDropQos0After: 10,
    /**
     * Resident memory of this node, bytes: beyond it the node is congested as above, logs it and
     * counts it (`fleetmq_memory_bound_hits_total`). 1 GiB leaves a t3.medium (4 GiB) room for
     * Redis, Sentinel and the system beside the broker.
     */
    maxMemory: 1024 * 1024 * 1024,
    /**
     * Milliseconds a write waits for `cluster.redis.waitReplicas` replicas (Redis `WAIT`) before the
     * client's acknowledgement is refused instead (the client resends): a replica on the same network
     * answers within a millisecond.
     */
    redisWaitTimeout: 2_000,
  }),
  rules: Object.freeze({
    /**
     * Messages an action holds in memory while its sink is slow or down (about 100 MB at 1 KB
     * each); past it they wait in the spill log only (or, with maxDiskBytes 0, the oldest is
     * dropped and counted: `fleetmq_action_dropped_total{reason="memory_full"}`).
     */
    maxQueued: 100_000,
    /** Bytes of each action's spill log on disk (1 GiB); 0 keeps the buffer in memory only. */
    maxDiskBytes: 1024 * 1024 * 1024,
    /** fdatasync the spill log (grouped) before a QoS 1/2 PUBACK is sent. */
    fsync: true,
    /** Messages per send to a sink (one batch in flight per action keeps each key's order). */
    maxBatch: 1_000,
    /** Milliseconds before the first retry of a failed send; doubles per failure. */
    initialBackoff: 100,
    /** Longest wait between retries, ms. */
    maxBackoff: 5_000,
    /** Milliseconds to connect to a Kafka broker. */
    kafkaConnectTimeout: 5_000,
    /** Milliseconds a Kafka produce request may take. */
    kafkaRequestTimeout: 10_000,
  }),
})
