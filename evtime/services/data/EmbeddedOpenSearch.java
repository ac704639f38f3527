// A single OpenSearch 2.19 node in this JVM, started for evtime's tests and demo.
//
// Usage: java -cp '<libs>/*' EmbeddedOpenSearch.java <home> <http-port> <transport-port>
// (or compiled with javac and run as a class). It stops on SIGTERM via a shutdown hook.

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.index.reindex.ReindexPlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

public final class EmbeddedOpenSearch {

    /** Node's plugin-taking constructor is protected; this subclass only opens it. */
    private static final class ClasspathPluginNode extends Node {
        ClasspathPluginNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: EmbeddedOpenSearch <home> <http-port> <transport-port>");
            System.exit(2);
        }
        Path home = Paths.get(args[0]).toAbsolutePath();
        for (String sub : List.of("config", "data", "logs", "modules", "plugins")) {
            Files.createDirectories(home.resolve(sub));
        }
        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "evtime")
            .put("node.name", "evtime-1")
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", args[1])
            .put("transport.port", args[2])
            // A developer's disk may be fuller than the default watermarks allow.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            // Test indices have one shard and no replica, so one node is green.
            .put("action.auto_create_index", true)
            .build();
        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            settings, Collections.emptyMap(), home.resolve("config"), () -> "evtime-1");
        Node node = new ClasspathPluginNode(
            environment,
            List.of(Netty4Plugin.class, ReindexPlugin.class, CommonAnalysisPlugin.class));

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "evtime-opensearch-shutdown"));

        node.start();
        System.out.println("evtime: OpenSearch started on http://127.0.0.1:" + args[1]);
        System.out.flush();
        // Node threads may all be daemons; keep the JVM alive until SIGTERM.
        stopped.await();
    }
}
