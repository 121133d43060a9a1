"""The jobs written with PySpark Structured Streaming (its own venv:
requirements-pyspark.txt), local[2], the Kafka source (spark-sql-kafka-0-10,
resolved from Maven Central by spark.jars.packages at the first start), each
query run with trigger(availableNow=True) so it ends at the topic's end.

Every job runs its query twice in one process: `seconds` is the first (from the
process's start: JVM, session and query), `seconds_warm` the second query alone
(JVM warm, new checkpoint). Its Kafka sink is at-least-once, so there is no eos job.

Usage: python jobs_pyspark.py JOB BOOTSTRAP TOPIC RECORDS OUT_TOPIC WORKDIR"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pyspark
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StructField, StructType

import spec

SCHEMA = StructType([StructField("i", IntegerType()), StructField("f", IntegerType())])


def run_query(spark, job: str, bootstrap: str, topic: str, out_topic: str, checkpoint: Path) -> dict:
    source = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", bootstrap)
              .option("subscribe", topic).option("startingOffsets", "earliest").load())
    found: dict = {"count": 0, "kept": 0}
    counts: dict = {}
    writer = None
    if job == "count":
        writer = source.writeStream.foreachBatch(lambda df, _id: found.__setitem__("count", found["count"] + df.count()))
    elif job == "filter":
        kept = source.filter(F.col("value").cast("string").contains(spec.SUBSTRING))
        writer = kept.writeStream.foreachBatch(lambda df, _id: found.__setitem__("kept", found["kept"] + df.count()))
    elif job == "json":
        parsed = source.select(F.col("key"), F.from_json(F.col("value").cast("string"), SCHEMA).alias("v"))
        out = parsed.filter("v.f = 1").select(F.col("key"), F.to_json(F.struct(F.col("v.i").alias("i"))).alias("value"))
        writer = (out.writeStream.format("kafka").option("kafka.bootstrap.servers", bootstrap)
                  .option("topic", out_topic))
    elif job == "stateful":
        totals = source.select(F.col("key").cast("string").alias("key")).groupBy("key").count()
        writer = totals.writeStream.outputMode("update").foreachBatch(
            lambda df, _id: counts.update({row["key"]: row["count"] for row in df.collect()}))
    query = writer.option("checkpointLocation", str(checkpoint)).trigger(availableNow=True).start()
    query.awaitTermination()
    if job == "stateful":
        return {"count": sum(counts.values()), "keys": len(counts)}
    return {k: v for k, v in found.items() if v} if job != "json" else {}


def main(job: str, bootstrap: str, topic: str, records: int, out_topic: str, workdir: Path) -> None:
    started = time.perf_counter()
    version = pyspark.__version__
    spark = (SparkSession.builder.master("local[2]").appName(f"bench-{job}")
             .config("spark.jars.packages", f"org.apache.spark:spark-sql-kafka-0-10_2.12:{version}")
             .config("spark.sql.shuffle.partitions", "4").config("spark.ui.enabled", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    first = run_query(spark, job, bootstrap, topic, out_topic, workdir / "checkpoint-1")
    seconds = time.perf_counter() - started
    # The warm query of the json job writes to the same output topic: run.py
    # counts that topic, so the second query goes to a topic of its own.
    warm_started = time.perf_counter()
    second = run_query(spark, job, bootstrap, topic, out_topic + "-warm" if out_topic else "", workdir / "checkpoint-2")
    seconds_warm = time.perf_counter() - warm_started
    spark.stop()
    if first != second:
        raise SystemExit(f"the two queries disagree: {first} != {second}")
    print(__import__("json").dumps({"seconds": seconds, "seconds_warm": seconds_warm, "check": first}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], Path(sys.argv[6]))
