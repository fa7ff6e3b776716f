import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.util.Collection;
import java.util.Map;

import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.AbstractConfig;
import org.apache.kafka.connect.errors.ConnectException;
import org.apache.kafka.connect.sink.SinkRecord;
import org.apache.kafka.connect.sink.SinkTask;

/** The task of FileSink: appends, and makes the file durable in flush (before the offsets are committed). */
public final class FileSinkTask extends SinkTask {
    private FileOutputStream file;
    private Writer out;

    @Override
    public void start(Map<String, String> props) {
        String path = new AbstractConfig(FileSink.CONFIG, props).getString("file");
        try {
            file = new FileOutputStream(path, true);
        } catch (IOException e) {
            throw new ConnectException("cannot open " + path, e);
        }
        out = new OutputStreamWriter(file, StandardCharsets.UTF_8);
    }

    @Override
    public void put(Collection<SinkRecord> records) {
        try {
            for (SinkRecord r : records) {
                out.write(r.topic() + "\t" + r.kafkaPartition() + "\t" + r.kafkaOffset() + "\t" + r.key() + "\t"
                          + r.value() + "\n");
            }
        } catch (IOException e) {
            throw new ConnectException("cannot append", e);
        }
    }

    @Override
    public void flush(Map<TopicPartition, OffsetAndMetadata> offsets) {
        try {
            out.flush();
            file.getFD().sync();
        } catch (IOException e) {
            throw new ConnectException("cannot flush", e);
        }
    }

    @Override
    public void stop() {
        try {
            if (out != null) {
                out.close();
            }
        } catch (IOException e) {
            throw new ConnectException("cannot close", e);
        }
    }

    @Override
    public String version() {
        return "1";
    }
}
