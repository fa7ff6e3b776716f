import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;

import org.apache.kafka.common.config.AbstractConfig;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.source.SourceTask;

/** The task of NumberedSource: emits `batch` numbers per poll from the committed source offset on. */
public final class NumberedSourceTask extends SourceTask {
    private String topic;
    private long count;
    private int keys;
    private int batch;
    private long intervalMs;
    private Map<String, String> partition;
    private long next;

    @Override
    public void start(Map<String, String> props) {
        AbstractConfig config = new AbstractConfig(NumberedSource.CONFIG, props);
        topic = config.getString("topic");
        count = config.getLong("count");
        keys = config.getInt("keys");
        batch = config.getInt("batch");
        intervalMs = config.getLong("interval.ms");
        partition = Collections.singletonMap("numbers", topic);
        Map<String, Object> stored = context.offsetStorageReader().offset(partition);
        next = stored == null ? 0L : ((Number) stored.get("next")).longValue();
        System.out.println("NumberedSourceTask starts at " + next + " of " + count);
    }

    @Override
    public List<SourceRecord> poll() throws InterruptedException {
        if (next >= count) {
            Thread.sleep(200);  // done: poll must not spin
            return null;
        }
        if (intervalMs > 0) {
            Thread.sleep(intervalMs);
        }
        List<SourceRecord> records = new ArrayList<>();
        for (long end = Math.min(count, next + batch); next < end; next++) {
            records.add(new SourceRecord(partition, Collections.singletonMap("next", next + 1), topic, null,
                Schema.STRING_SCHEMA, "k" + (next % keys), Schema.STRING_SCHEMA, Long.toString(next)));
        }
        return records;
    }

    @Override
    public void stop() {
    }

    @Override
    public String version() {
        return "1";
    }
}
