"""The two Avro protocols Flume streams speak.

`SOURCE_PROTOCOL` is Flume's own AvroSourceProtocol (flume-ng-sdk's flume.avdl):
what its Avro sink calls on an Avro source, and on `flume_stream`.
`PULL_PROTOCOL` is ours, served by the pull sink (docker/flume-sink, whose
copy in src/main/resources must stay the same; a unit test compares them).
"""

from __future__ import annotations

from receivers.flume.ipc import AvroProtocol

# The MD5 Flume 1.11's Java Avro computes over its rendering of AvroSourceProtocol;
# its Avro sink sends it as clientHash (and as its guess of the server's hash).
FLUME_1_11_SOURCE_PROTOCOL_MD5 = bytes.fromhex("86aadae2c45474c0fe93ffd0f2350a65")

SOURCE_PROTOCOL_TEXT = """{"protocol":"AvroSourceProtocol","namespace":"org.apache.flume.source.avro",
 "types":[{"type":"enum","name":"Status","symbols":["OK","FAILED","UNKNOWN"]},
          {"type":"record","name":"AvroFlumeEvent","fields":[
             {"name":"headers","type":{"type":"map","values":"string"}},{"name":"body","type":"bytes"}]}],
 "messages":{"append":{"request":[{"name":"event","type":"AvroFlumeEvent"}],"response":"Status"},
             "appendBatch":{"request":[{"name":"events","type":{"type":"array","items":"AvroFlumeEvent"}}],
                            "response":"Status"}}}"""

SOURCE_PROTOCOL = AvroProtocol(SOURCE_PROTOCOL_TEXT, known_hashes=(FLUME_1_11_SOURCE_PROTOCOL_MD5,))

PULL_PROTOCOL_TEXT = """{"protocol":"FlumePullProtocol","namespace":"io.github.ingest.flume",
 "types":[{"type":"record","name":"PullEvent","fields":[
            {"name":"headers","type":{"type":"map","values":"string"}},{"name":"body","type":"bytes"}]},
          {"type":"record","name":"EventBatch","fields":[
            {"name":"errorMsg","type":"string","default":""},{"name":"sequenceNumber","type":"string"},
            {"name":"events","type":{"type":"array","items":"PullEvent"}}]}],
 "messages":{"getEventBatch":{"request":[{"name":"n","type":"int"}],"response":"EventBatch"},
             "ack":{"request":[{"name":"sequenceNumber","type":"string"}],"response":"null"},
             "nack":{"request":[{"name":"sequenceNumber","type":"string"}],"response":"null"}}}"""

PULL_PROTOCOL = AvroProtocol(PULL_PROTOCOL_TEXT)
