// A JVM for zkstall's JVM tests: threads whose Java names are longer than the kernel's 15
// characters fsync in a loop, one started before tracing ("ready" on stdout; it can only
// be named by jcmd) and one after ("go" on stdin; named by HotSpot's thread__start probe),
// while the main thread forces full GCs, each a safepoint, over ~100 MB of live objects.
// Args: DIR SECONDS. Run with -XX:+UseSerialGC so each System.gc() is one stop-the-world
// collection.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;

public class LongNames {
    static volatile boolean stop = false;

    static void fsyncLoop(Path p) {
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.CREATE, StandardOpenOption.WRITE)) {
            ByteBuffer b = ByteBuffer.allocate(512);
            while (!stop) {
                b.clear();
                ch.write(b);
                ch.force(false);
            }
        } catch (Exception e) {
            e.printStackTrace();
        }
    }

    public static void main(String[] args) throws Exception {
        Path dir = Paths.get(args[0]);
        int seconds = Integer.parseInt(args[1]);
        Thread early = new Thread(() -> fsyncLoop(dir.resolve("early.log")), "EarlyLongNamedSyncThread-1");
        early.start();
        System.out.println("ready");
        System.out.flush();
        new BufferedReader(new InputStreamReader(System.in)).readLine();
        Thread late = new Thread(() -> fsyncLoop(dir.resolve("late.log")), "LateLongNamedSyncThread-2");
        late.start();
        List<byte[]> live = new ArrayList<>();
        for (int i = 0; i < 400; i++) {
            live.add(new byte[256 * 1024]);
        }
        long end = System.nanoTime() + seconds * 1_000_000_000L;
        while (System.nanoTime() < end) {
            System.gc();
            Thread.sleep(200);
        }
        stop = true;
        early.join();
        late.join();
        System.out.println("done " + live.size());
    }
}
