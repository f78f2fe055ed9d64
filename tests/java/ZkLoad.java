// Write load for a ZooKeeper server: asynchronous creates of sequential znodes (512 B),
// at most 16 in flight, for the given number of seconds. Every create is a transaction
// the server's SyncThread appends to its log and fsyncs (in groups).
//
// Usage: java -cp <zookeeper jars> ZkLoad.java 127.0.0.1:PORT SECONDS [BYTES]
// (BYTES: each znode's payload, 512 by default; larger ones grow the snapshots.)
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooKeeper;

public class ZkLoad {
    public static void main(String[] args) throws Exception {
        String hostPort = args[0];
        long seconds = Long.parseLong(args[1]);
        CountDownLatch connected = new CountDownLatch(1);
        ZooKeeper zk = new ZooKeeper(hostPort, 30000, e -> {
            if (e.getState() == Watcher.Event.KeeperState.SyncConnected) connected.countDown();
        });
        if (!connected.await(30, TimeUnit.SECONDS)) throw new RuntimeException("cannot connect to " + hostPort);
        try {
            zk.create("/load", new byte[0], ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        } catch (KeeperException.NodeExistsException e) {
            // from an earlier run
        }
        byte[] data = new byte[args.length > 2 ? Integer.parseInt(args[2]) : 512];
        Semaphore inflight = new Semaphore(16);
        AtomicLong done = new AtomicLong();
        long end = System.nanoTime() + seconds * 1_000_000_000L;
        while (System.nanoTime() < end) {
            if (!inflight.tryAcquire(100, TimeUnit.MILLISECONDS)) continue;
            zk.create("/load/n", data, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT_SEQUENTIAL,
                    (rc, path, ctx, name) -> { done.incrementAndGet(); inflight.release(); }, null);
        }
        inflight.acquire(16);
        System.out.println(done.get());
        zk.close();
    }
}
