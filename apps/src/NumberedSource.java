import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.source.SourceConnector;

/**
 * A source of N numbered records: record s (0 <= s < count) has key "k" + (s % keys) and value s, so each key's
 * values are increasing. One task; its source offset is the next number, so a restarted task goes on where the
 * worker last committed (Connect's sources are at least once: it may emit a number again after a restart).
 * Config: topic, count, keys, batch (records per poll), interval.ms (pause between polls).
 */
public final class NumberedSource extends SourceConnector {
    static final ConfigDef CONFIG = new ConfigDef()
        .define("topic", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "the topic to write")
        .define("count", ConfigDef.Type.LONG, ConfigDef.Importance.HIGH, "how many records")
        .define("keys", ConfigDef.Type.INT, 8, ConfigDef.Importance.MEDIUM, "how many keys")
        .define("batch", ConfigDef.Type.INT, 50, ConfigDef.Importance.LOW, "records per poll")
        .define("interval.ms", ConfigDef.Type.LONG, 0L, ConfigDef.Importance.LOW, "pause between polls");

    private Map<String, String> props;

    @Override
    public void start(Map<String, String> props) {
        CONFIG.parse(props);  // a bad config fails the connector at once, not its task later
        this.props = props;
    }

    @Override
    public Class<? extends Task> taskClass() {
        return NumberedSourceTask.class;
    }

    @Override
    public List<Map<String, String>> taskConfigs(int maxTasks) {
        List<Map<String, String>> configs = new ArrayList<>();
        configs.add(props);
        return configs;
    }

    @Override
    public void stop() {
    }

    @Override
    public ConfigDef config() {
        return CONFIG;
    }

    @Override
    public String version() {
        return "1";
    }
}
