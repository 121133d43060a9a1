package io.github.ingest.flume;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.avro.Protocol;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.ipc.generic.GenericResponder;
import org.apache.avro.ipc.netty.NettyServer;
import org.apache.flume.Channel;
import org.apache.flume.Context;
import org.apache.flume.Event;
import org.apache.flume.FlumeException;
import org.apache.flume.Transaction;
import org.apache.flume.conf.Configurable;
import org.apache.flume.instrumentation.SinkCounter;
import org.apache.flume.sink.AbstractSink;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A Flume sink that is polled: clients call getEventBatch(n), then ack(seq) or nack(seq).
 *
 * Each batch is a channel transaction on a pool thread of its own (Flume transactions
 * are bound to the thread that opened them). The events are taken and returned, and the
 * transaction stays open until the client acks it (commit: the events leave the
 * channel), nacks it or does not answer within `timeout` seconds (rollback: the events
 * are delivered again). An empty channel gives a batch with no events and an errorMsg.
 *
 * Settings: hostname (default 127.0.0.1), port (required), timeout (s, default 60),
 * backoffInterval (ms to wait once for a first event, default 200), threads (open
 * batches at once, default 10).
 */
public class PullSink extends AbstractSink implements Configurable {
  private static final Logger LOG = LoggerFactory.getLogger(PullSink.class);
  static final String PROTOCOL_RESOURCE = "/ingest-flume-pull.avpr";

  private String hostname;
  private int port;
  private int timeoutSeconds;
  private int backoffMillis;
  private int threads;

  private Protocol protocol;
  private NettyServer server;
  private ExecutorService pool;
  private SinkCounter counter;
  private final Map<String, CompletableFuture<Boolean>> outcomes = new ConcurrentHashMap<>();
  private final AtomicLong nextBatch = new AtomicLong();
  private final String runId = Long.toHexString(System.nanoTime());

  @Override
  public void configure(Context context) {
    hostname = context.getString("hostname", "127.0.0.1");
    Integer configuredPort = context.getInteger("port");
    if (configuredPort == null) {
      throw new FlumeException("sink " + getName() + ": set port, the port flume_polling_stream polls");
    }
    port = configuredPort;
    timeoutSeconds = context.getInteger("timeout", 60);
    backoffMillis = context.getInteger("backoffInterval", 200);
    threads = context.getInteger("threads", 10);
    if (timeoutSeconds < 1 || backoffMillis < 0 || threads < 1) {
      throw new FlumeException("sink " + getName() + ": timeout and threads must be positive, backoffInterval >= 0");
    }
    if (counter == null) {
      counter = new SinkCounter(getName());
    }
  }

  @Override
  public synchronized void start() {
    try (InputStream in = PullSink.class.getResourceAsStream(PROTOCOL_RESOURCE)) {
      protocol = Protocol.parse(in);
    } catch (IOException e) {
      throw new FlumeException("cannot read " + PROTOCOL_RESOURCE + " from the sink's jar", e);
    }
    pool = Executors.newFixedThreadPool(threads, r -> {
      Thread t = new Thread(r, "pull-sink-" + getName());
      t.setDaemon(true);
      return t;
    });
    try {
      server = new NettyServer(new Responder(), new InetSocketAddress(hostname, port));
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new FlumeException("sink " + getName() + ": interrupted while binding " + hostname + ":" + port, e);
    }
    counter.start();
    super.start();
    LOG.info("Pull sink {} serving {}:{} (timeout {} s, {} threads)", getName(), hostname, server.getPort(),
        timeoutSeconds, threads);
  }

  @Override
  public synchronized void stop() {
    if (server != null) {
      try {
        server.close();
      } catch (Exception e) {
        LOG.warn("Pull sink {}: closing its server failed: {}", getName(), e.toString());
      }
    }
    for (CompletableFuture<Boolean> outcome : outcomes.values()) {
      outcome.complete(false);  // open batches roll back: their events stay in the channel
    }
    if (pool != null) {
      pool.shutdown();
      try {
        pool.awaitTermination(10, TimeUnit.SECONDS);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
    counter.stop();
    super.stop();
    LOG.info("Pull sink {} stopped", getName());
  }

  /** The work happens on the RPC threads; the runner only needs to be told to wait. */
  @Override
  public Status process() {
    return Status.BACKOFF;
  }

  private GenericRecord batch(String sequence, String error, List<GenericRecord> events) {
    GenericRecord batch = new GenericData.Record(protocol.getType("io.github.ingest.flume.EventBatch"));
    batch.put("errorMsg", error);
    batch.put("sequenceNumber", sequence);
    batch.put("events", new GenericData.Array<>(
        Schema.createArray(protocol.getType("io.github.ingest.flume.PullEvent")), events));
    return batch;
  }

  /** Takes up to n events in a transaction on a pool thread; returns them, then waits for the outcome. */
  private GenericRecord getEventBatch(int n) throws Exception {
    String sequence = runId + "-" + nextBatch.incrementAndGet();
    CompletableFuture<GenericRecord> taken = new CompletableFuture<>();
    CompletableFuture<Boolean> outcome = new CompletableFuture<>();
    outcomes.put(sequence, outcome);
    pool.submit(() -> runBatch(sequence, Math.max(1, n), taken, outcome));
    try {
      return taken.get();
    } catch (java.util.concurrent.ExecutionException e) {
      return batch(sequence, "could not take events: " + e.getCause(), Collections.emptyList());
    }
  }

  private void runBatch(String sequence, int n, CompletableFuture<GenericRecord> taken,
      CompletableFuture<Boolean> outcome) {
    Channel channel = getChannel();
    Transaction tx = channel.getTransaction();
    boolean committed = false;
    try {
      tx.begin();
      List<GenericRecord> events = new ArrayList<>();
      Schema eventSchema = protocol.getType("io.github.ingest.flume.PullEvent");
      boolean waited = false;
      while (events.size() < n) {
        Event event = channel.take();
        if (event == null) {
          if (!events.isEmpty() || waited) {
            break;
          }
          waited = true;
          Thread.sleep(backoffMillis);
          continue;
        }
        GenericRecord record = new GenericData.Record(eventSchema);
        record.put("headers", new HashMap<>(event.getHeaders()));
        record.put("body", ByteBuffer.wrap(event.getBody()));
        events.add(record);
      }
      if (events.isEmpty()) {
        counter.incrementBatchEmptyCount();
        taken.complete(batch(sequence, "no events in channel " + channel.getName(), events));
        return;
      }
      counter.incrementEventDrainAttemptCount();
      taken.complete(batch(sequence, "", events));
      boolean ack;
      try {
        ack = outcome.get(timeoutSeconds, TimeUnit.SECONDS);
      } catch (TimeoutException e) {
        LOG.warn("Pull sink {}: batch {} of {} events not acked within {} s; rolling back", getName(), sequence,
            events.size(), timeoutSeconds);
        ack = false;
      }
      if (ack) {
        tx.commit();
        committed = true;
        counter.addToEventDrainSuccessCount(events.size());
        counter.incrementBatchCompleteCount();
      } else {
        LOG.info("Pull sink {}: batch {} nacked; its {} events stay in the channel", getName(), sequence,
            events.size());
      }
    } catch (Throwable t) {
      LOG.warn("Pull sink {}: batch {} failed: {}", getName(), sequence, t.toString());
      taken.completeExceptionally(t);
    } finally {
      if (!committed) {
        try {
          tx.rollback();
        } catch (Throwable t) {
          LOG.warn("Pull sink {}: rollback of batch {} failed: {}", getName(), sequence, t.toString());
        }
      }
      tx.close();
      outcomes.remove(sequence);
    }
  }

  private void complete(String sequence, boolean ack) {
    CompletableFuture<Boolean> outcome = outcomes.get(sequence);
    if (outcome == null) {
      LOG.warn("Pull sink {}: {} of unknown batch {} (already timed out?)", getName(), ack ? "ack" : "nack",
          sequence);
      return;
    }
    outcome.complete(ack);
  }

  private class Responder extends GenericResponder {
    Responder() {
      super(PullSink.this.protocol);
    }

    @Override
    public Object respond(Protocol.Message message, Object request) throws Exception {
      GenericRecord params = (GenericRecord) request;
      switch (message.getName()) {
        case "getEventBatch":
          return getEventBatch((Integer) params.get("n"));
        case "ack":
          complete(params.get("sequenceNumber").toString(), true);
          return null;
        case "nack":
          complete(params.get("sequenceNumber").toString(), false);
          return null;
        default:
          throw new IllegalArgumentException("unknown message " + message.getName());
      }
    }
  }
}
