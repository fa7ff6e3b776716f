package org.apache.kafka.common.utils;

/**
 * connect-file 4.3.1 (the newest on Maven Central) calls AppInfoParser.getVersion() in its connectors' version();
 * kafka-clients 4.4.0 moved that class to org.apache.kafka.common.utils.internals. This bridge gives the old name
 * the one method those connectors call, so they run on the pinned 4.4.0 runtime.
 */
public final class AppInfoParser {
    private AppInfoParser() {
    }

    public static String getVersion() {
        return org.apache.kafka.common.utils.internals.AppInfoParser.getVersion();
    }
}
