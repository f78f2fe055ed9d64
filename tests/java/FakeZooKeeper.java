// A stand-in for a ZooKeeper server as zkstall sees one: a JVM whose command line names
// ZooKeeper's main class, with a thread named "SyncThread:0" that appends to a log and
// calls FileChannel.force(false) (fdatasync on Linux), exactly as ZooKeeper's
// FileTxnLog.commit() does. It times each force() as ZooKeeper does (System.nanoTime)
// and prints one line per call: "<tid-unknown> <duration_ns>".
//
// Usage: java FakeZooKeeper.java <log file> <calls> org.apache.zookeeper.server.quorum.QuorumPeerMain
// Waits for a line on stdin before starting.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;

public class FakeZooKeeper {
    public static void main(String[] args) throws Exception {
        FileChannel log = FileChannel.open(Paths.get(args[0]),
                StandardOpenOption.CREATE, StandardOpenOption.WRITE);
        int calls = Integer.parseInt(args[1]);
        System.out.println("ready");
        System.out.flush();
        new BufferedReader(new InputStreamReader(System.in)).readLine();
        Thread sync = new Thread(() -> {
            try {
                for (int i = 0; i < calls; i++) {
                    log.write(ByteBuffer.wrap(new byte[512]));
                    long start = System.nanoTime();
                    log.force(false);
                    System.out.println(System.nanoTime() - start);
                    Thread.sleep(20);
                }
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        }, "SyncThread:0");
        sync.start();
        sync.join();
        System.out.flush();
    }
}
