package dev.clickpath.peer;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.LogAndContinueExceptionHandler;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KGroupedStream;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.SessionWindows;
import org.apache.kafka.streams.kstream.SlidingWindows;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.processor.TimestampExtractor;
import org.apache.kafka.streams.state.BuiltInDslStoreSuppliers;
import org.apache.kafka.streams.state.SessionStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The stateful part of clickpath written the way a Kafka Streams user would: per-user event-time
 * sessions (inactivity gap, final results only) and per-user sliding-window event counts, with
 * exactly-once. `clickpath-lab bench --kafka-streams` runs it on the same broker and input as
 * clickpath's chained pipeline and compares events per CPU second.
 *
 * <p>Input: clickpath's raw topic (key = user id, value = a ClickEvent in Avro behind the 5-byte
 * wire header). Records that do not decode are skipped (LogAndContinueExceptionHandler), as a
 * Streams user would configure; clickpath dead-letters them instead.
 *
 * <p>Output: {@code --sessions} (key user, value "start,end,events,purchases" when a session
 * closes) and {@code --windows} (key user, value "window_ms,start,count" per sliding-window update).
 *
 * <p>Protocol with the bench on stdout: "peer: RUNNING" once the instance owns its partitions and
 * has restored its stores, "peer: ERROR ..." if processing fails. It runs until stdin closes or
 * SIGTERM, then closes cleanly (committing its last transaction).
 */
public final class StreamsPeer {
  private StreamsPeer() {}

  /** The fields of a ClickEvent the two aggregations need. */
  record Event(String user, int type, long time) {}

  /** Index of PURCHASE in ClickEvent's EventType symbols. */
  private static final int PURCHASE = 8;

  public static void main(String[] argv) throws Exception {
    Map<String, String> args = parse(argv);
    String bootstrap = need(args, "bootstrap");
    String appId = need(args, "app-id");
    String input = need(args, "input");
    String sessionsTopic = need(args, "sessions");
    String windowsTopic = need(args, "windows");
    Schema schema = new Schema.Parser().parse(new File(need(args, "schema")));
    long gapMs = Long.parseLong(args.getOrDefault("gap-ms", "1800000"));
    long graceMs = Long.parseLong(args.getOrDefault("grace-ms", "305000"));
    List<Long> windowsMs = new ArrayList<>();
    // "none": sessions only, to see what the sliding windows cost.
    for (String w : args.getOrDefault("windows-ms", "300000,3600000").split(",")) {
      if (!w.isBlank() && !w.trim().equals("none")) {
        windowsMs.add(Long.parseLong(w.trim()));
      }
    }
    EventTime.minMs = Long.parseLong(args.getOrDefault("min-event-time-ms", "946684800000"));
    EventTime.maxFutureSkewMs = Long.parseLong(args.getOrDefault("max-future-skew-ms", "86400000"));

    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, args.getOrDefault("threads", "1"));
    props.put(StreamsConfig.STATE_DIR_CONFIG, args.getOrDefault("state-dir",
        Files.createTempDirectory("clickpath-peer").toString()));
    props.put(StreamsConfig.DESERIALIZATION_EXCEPTION_HANDLER_CLASS_CONFIG,
        LogAndContinueExceptionHandler.class);
    props.put(StreamsConfig.DEFAULT_TIMESTAMP_EXTRACTOR_CLASS_CONFIG, EventTime.class);
    props.put("consumer.auto.offset.reset", "earliest");
    if ("memory".equals(args.getOrDefault("store", "rocksdb"))) {
      // Every DSL store in memory, changelogged: the durability model of clickpath's stages.
      props.put(StreamsConfig.DSL_STORE_SUPPLIERS_CLASS_CONFIG,
          BuiltInDslStoreSuppliers.InMemoryDslStoreSuppliers.class);
    }

    Serde<Event> events = Serdes.serdeFrom(new EventSerializer(), new ClickEventDeserializer(schema));
    StreamsBuilder builder = new StreamsBuilder();
    KStream<String, Event> stream = builder.stream(input, Consumed.with(Serdes.String(), events));
    KGroupedStream<String, Event> byUser = stream.groupByKey(Grouped.with(Serdes.String(), events));

    byUser
        .windowedBy(SessionWindows.ofInactivityGapAndGrace(Duration.ofMillis(gapMs), Duration.ofMillis(graceMs)))
        .aggregate(
            () -> new long[2],
            (user, e, agg) -> new long[] {agg[0] + 1, agg[1] + (e.type() == PURCHASE ? 1 : 0)},
            (user, a, b) -> new long[] {a[0] + b[0], a[1] + b[1]},
            Materialized.<String, long[], SessionStore<Bytes, byte[]>>as("sessions")
                .withKeySerde(Serdes.String())
                .withValueSerde(new CountsSerde()))
        .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded())
            .withName("sessions-final"))
        .toStream()
        .filter((w, agg) -> agg != null)
        .map((w, agg) -> KeyValue.pair(w.key(),
            w.window().start() + "," + w.window().end() + "," + agg[0] + "," + agg[1]))
        .to(sessionsTopic, Produced.with(Serdes.String(), Serdes.String()));

    for (long windowMs : windowsMs) {
      byUser
          .windowedBy(SlidingWindows.ofTimeDifferenceAndGrace(Duration.ofMillis(windowMs), Duration.ofMillis(graceMs)))
          .count(Materialized.<String, Long, WindowStore<Bytes, byte[]>>as("count-" + windowMs)
              .withKeySerde(Serdes.String())
              .withValueSerde(Serdes.Long()))
          .toStream()
          .filter((w, n) -> n != null)
          .map((w, n) -> KeyValue.pair(w.key(), windowMs + "," + w.window().start() + "," + n))
          .to(windowsTopic, Produced.with(Serdes.String(), Serdes.String()));
    }

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    CountDownLatch done = new CountDownLatch(1);
    streams.setStateListener((now, before) -> {
      if (now == KafkaStreams.State.RUNNING) {
        System.out.println("peer: RUNNING");
        System.out.flush();
      } else if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
        done.countDown();
      }
    });
    streams.setUncaughtExceptionHandler(e -> {
      System.out.println("peer: ERROR " + e);
      System.out.flush();
      return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
    });
    Runtime.getRuntime().addShutdownHook(new Thread(() -> streams.close(Duration.ofSeconds(30))));
    // The bench closes our stdin to stop us.
    Thread stdinWatch = new Thread(() -> {
      try {
        while (System.in.read() >= 0) {
          // ignore input
        }
      } catch (IOException ignored) {
        // closed
      }
      done.countDown();
    }, "stdin-watch");
    stdinWatch.setDaemon(true);
    stdinWatch.start();
    streams.start();
    done.await();
    streams.close(Duration.ofSeconds(30));
    System.out.println("peer: STOPPED");
  }

  /** The event's own time, as clickpath's stages use it; the partition time for what did not decode. */
  public static final class EventTime implements TimestampExtractor {
    /** Event times outside [minMs, now + maxFutureSkewMs] are dropped, as clickpath's cleaning does. */
    static volatile long minMs = 946_684_800_000L;
    static volatile long maxFutureSkewMs = 86_400_000L;

    @Override
    public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
      if (record.value() instanceof Event e) {
        // A negative timestamp makes Kafka Streams drop the record. An event from the year 2100 would
        // otherwise move stream time there and close every window, and the broker rejects its outputs.
        long t = e.time();
        return t < minMs || t > System.currentTimeMillis() + maxFutureSkewMs ? -1 : t;
      }
      return partitionTime >= 0 ? partitionTime : record.timestamp();
    }
  }

  /** Decodes the ClickEvent behind the wire header (magic byte 0, 4-byte schema id). */
  static final class ClickEventDeserializer implements Deserializer<Event> {
    private final GenericDatumReader<GenericRecord> reader;
    private BinaryDecoder decoder;
    private GenericRecord reuse;

    ClickEventDeserializer(Schema schema) {
      this.reader = new GenericDatumReader<>(schema, schema, new GenericData());
    }

    @Override
    public Event deserialize(String topic, byte[] data) {
      if (data == null || data.length < 5 || data[0] != 0) {
        throw new IllegalArgumentException("not a framed ClickEvent");
      }
      try {
        decoder = DecoderFactory.get().binaryDecoder(data, 5, data.length - 5, decoder);
        reuse = reader.read(reuse, decoder);
      } catch (IOException | RuntimeException e) {
        throw new IllegalArgumentException("ClickEvent does not decode: " + e.getMessage(), e);
      }
      Object user = reuse.get("user_id");
      Object type = reuse.get("event_type");
      Object time = reuse.get("event_time");
      if (user == null || type == null || !(time instanceof Long t)) {
        throw new IllegalArgumentException("ClickEvent without user, type or time");
      }
      int ordinal = reuse.getSchema().getField("event_type").schema().getEnumOrdinal(type.toString());
      return new Event(user.toString(), ordinal, t);
    }
  }

  /** Only for completeness of the serde: the topology never writes an Event. */
  static final class EventSerializer implements Serializer<Event> {
    @Override
    public byte[] serialize(String topic, Event e) {
      byte[] user = e.user().getBytes(StandardCharsets.UTF_8);
      return ByteBuffer.allocate(12 + user.length).putInt(e.type()).putLong(e.time()).put(user).array();
    }
  }

  /** A session's counters: events and purchases. */
  static final class CountsSerde implements Serde<long[]> {
    @Override
    public Serializer<long[]> serializer() {
      return (topic, c) -> c == null ? null : ByteBuffer.allocate(16).putLong(c[0]).putLong(c[1]).array();
    }

    @Override
    public Deserializer<long[]> deserializer() {
      return (topic, b) -> {
        if (b == null) {
          return null;
        }
        ByteBuffer buf = ByteBuffer.wrap(b);
        return new long[] {buf.getLong(), buf.getLong()};
      };
    }
  }

  private static Map<String, String> parse(String[] argv) {
    Map<String, String> out = new HashMap<>();
    for (int i = 0; i < argv.length; i++) {
      if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
        usage("unexpected argument " + argv[i]);
      }
      out.put(argv[i].substring(2), argv[++i]);
    }
    return out;
  }

  private static String need(Map<String, String> args, String name) {
    String v = args.get(name);
    if (v == null) {
      usage("missing --" + name);
    }
    return v;
  }

  private static void usage(String why) {
    System.err.println("peer: " + why + "\nusage: StreamsPeer --bootstrap HOST:PORT --app-id ID --input TOPIC"
        + " --sessions TOPIC --windows TOPIC --schema click_event.avsc [--gap-ms 1800000]"
        + " [--grace-ms 305000] [--windows-ms 300000,3600000|none] [--threads 1] [--store rocksdb|memory]"
        + " [--min-event-time-ms 946684800000] [--max-future-skew-ms 86400000]"
        + " [--state-dir DIR]");
    System.exit(2);
  }
}
