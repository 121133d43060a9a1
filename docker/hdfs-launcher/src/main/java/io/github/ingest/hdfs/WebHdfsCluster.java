package io.github.ingest.hdfs;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.concurrent.CountDownLatch;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

/**
 * A MiniDFSCluster (a NameNode and one DataNode in this JVM, WebHDFS on) for the
 * ingest/hdfs image, configured from the environment:
 *
 * <ul>
 *   <li>HDFS_HTTP_PORT: the NameNode's HTTP port, which serves WebHDFS (default 9870);
 *   <li>HDFS_DATANODE_HTTP_PORT: the DataNode's HTTP port (default 9864), where WebHDFS
 *       redirects every read and write;
 *   <li>HDFS_NAMENODE_PORT: the NameNode's RPC port (default 8020);
 *   <li>HDFS_BIND_HOST: the address all of them listen on (default 127.0.0.1; 0.0.0.0 when
 *       a bridge engine publishes the ports);
 *   <li>HDFS_ADVERTISED_HOST: the host name WebHDFS redirects to (default 127.0.0.1; the
 *       Docker host's address for clients elsewhere);
 *   <li>HDFS_DATA_DIR: where the cluster keeps its data (default /var/lib/hdfs/dfs);
 *   <li>HDFS_READY_FILE: a file written once the cluster is up, for health checks (default
 *       /var/lib/hdfs/ready).
 * </ul>
 *
 * <p>Unlike Hadoop's MiniDFSClusterManager, which always puts the DataNode on random ports of
 * 127.0.0.1, the DataNode here takes its addresses from the configuration
 * (checkDataNodeAddrConfig), so its HTTP port is known before the container starts and can be
 * published under the same number: clients on the Docker host follow redirects to
 * HDFS_ADVERTISED_HOST:HDFS_DATANODE_HTTP_PORT, the published port.
 *
 * <p>Prints "Started MiniDFSCluster" and writes HDFS_READY_FILE once the DataNode has
 * registered (WebHDFS answers earlier, but cannot write before); stops the cluster on SIGTERM.
 */
public final class WebHdfsCluster {
    private WebHdfsCluster() {
    }

    public static void main(String[] args) throws Exception {
        String bind = env("HDFS_BIND_HOST", "127.0.0.1");
        int namenodePort = port("HDFS_NAMENODE_PORT", 8020);
        int httpPort = port("HDFS_HTTP_PORT", 9870);
        int datanodeHttpPort = port("HDFS_DATANODE_HTTP_PORT", 9864);

        Configuration conf = new HdfsConfiguration();
        conf.set("hdfs.minidfs.basedir", env("HDFS_DATA_DIR", "/var/lib/hdfs/dfs"));
        conf.set("dfs.namenode.rpc-bind-host", bind);
        conf.set("dfs.namenode.http-bind-host", bind);
        conf.set("dfs.datanode.http.address", bind + ":" + datanodeHttpPort);
        // The data transfer and IPC ports are used inside the container only.
        conf.set("dfs.datanode.address", bind + ":0");
        conf.set("dfs.datanode.ipc.address", bind + ":0");
        // The host name in WebHDFS redirects: where clients reach the DataNode's HTTP port.
        conf.set("dfs.datanode.hostname", env("HDFS_ADVERTISED_HOST", "127.0.0.1"));
        conf.setBoolean("dfs.permissions.enabled", false);
        conf.setBoolean("dfs.webhdfs.enabled", true);
        // One DataNode: a write pipeline must not try to replace it.
        conf.setBoolean("dfs.client.block.write.replace-datanode-on-failure.enable", false);
        conf.setInt("dfs.replication", 1);

        MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf)
                .nameNodePort(namenodePort)
                .nameNodeHttpPort(httpPort)
                .numDataNodes(1)
                .checkDataNodeAddrConfig(true)
                .format(true)
                .build();
        Runtime.getRuntime().addShutdownHook(new Thread(cluster::shutdown, "hdfs-shutdown"));
        cluster.waitActive();
        System.out.println("Started MiniDFSCluster: WebHDFS on " + bind + ":" + httpPort + ", DataNode HTTP on "
                + bind + ":" + datanodeHttpPort + ", NameNode RPC on " + bind + ":" + namenodePort);
        System.out.flush();
        Files.write(Paths.get(env("HDFS_READY_FILE", "/var/lib/hdfs/ready")),
                "ready\n".getBytes(StandardCharsets.UTF_8));
        new CountDownLatch(1).await();
    }

    private static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    private static int port(String name, int fallback) {
        String value = env(name, Integer.toString(fallback));
        try {
            int port = Integer.parseInt(value);
            if (port > 0 && port < 65536) {
                return port;
            }
        } catch (NumberFormatException e) {
            // reported below
        }
        throw new IllegalArgumentException(name + "=" + value + " is not a port number (1-65535)");
    }
}
