/// Built-in and common-extension functions whose calls a policy should see, by what they do.
///
/// Names are matched on the function's own name, whatever schema the call names: these functions
/// live in `pg_catalog` or in an extension's schema (dblink and adminpack install wherever they
/// are created), and a look-alike in another schema is better flagged than missed. The lists
/// follow PostgreSQL 15 and its contrib modules; a function missing here is still listed in
/// `SQLStatement.functions`, so a policy can allow-list calls rather than deny-list them.
public enum SQLFunctionCatalog {
    /// Functions that read, list or write files on the database server, or load them into large
    /// objects (`serverFileAccess`).
    public static let serverFileAccess: Set<String> = [
        // Core, superuser or pg_read_server_files by default.
        "pg_read_file", "pg_read_binary_file", "pg_stat_file", "pg_ls_dir",
        "pg_ls_logdir", "pg_ls_waldir", "pg_ls_tmpdir", "pg_ls_archive_statusdir",
        "pg_ls_logicalsnapdir", "pg_ls_logicalmapdir", "pg_ls_replslotdir",
        // Server-side large-object import and export read and write server files.
        "lo_import", "lo_export",
        // adminpack.
        "pg_file_write", "pg_file_rename", "pg_file_unlink", "pg_file_sync", "pg_logdir_ls",
        "pg_file_read", "pg_file_length",
    ]

    /// Functions that run SQL they receive as a string, here or on another server
    /// (`dynamicSQL`): what they run is invisible to the inspection. Every `dblink_*` function
    /// counts too (`isDblink`).
    public static let runsSQLText: Set<String> = [
        "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
        // ts_stat(query) runs its argument; ts_rewrite(query, select) runs the second.
        "ts_stat", "ts_rewrite",
        "dblink",
    ]

    /// Functions that dump whole relations, schemas or databases named by a string or regclass,
    /// so the relations they read are not in `SQLStatement.relations`.
    public static let readsRelationsNamedInText: Set<String> = [
        "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
        "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema",
        "database_to_xml", "database_to_xmlschema", "database_to_xml_and_xmlschema",
    ]

    /// Functions that act on the server or on other sessions rather than on data: ending or
    /// cancelling backends, reloading configuration, changing settings, WAL and backup control,
    /// replication slots (whose changes expose every table's writes).
    public static let controlsServer: Set<String> = [
        "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
        "set_config", "pg_promote", "pg_log_backend_memory_contexts",
        "pg_switch_wal", "pg_create_restore_point", "pg_wal_replay_pause", "pg_wal_replay_resume",
        "pg_backup_start", "pg_backup_stop", "pg_start_backup", "pg_stop_backup",
        "pg_create_physical_replication_slot", "pg_create_logical_replication_slot",
        "pg_drop_replication_slot", "pg_copy_physical_replication_slot",
        "pg_copy_logical_replication_slot", "pg_replication_slot_advance",
        "pg_logical_slot_get_changes", "pg_logical_slot_peek_changes",
        "pg_logical_slot_get_binary_changes", "pg_logical_slot_peek_binary_changes",
        "pg_logical_emit_message",
    ]

    /// Everything `dangerousFunction` flags: the four lists above and every `dblink_*`.
    public static let dangerous: Set<String> =
        serverFileAccess.union(runsSQLText).union(readsRelationsNamedInText).union(controlsServer)

    /// Functions that change stored or server state even inside a SELECT (PostgreSQL refuses
    /// most of them in a read-only transaction): sequences, large objects, server files,
    /// notifications, statistics resets, server control. Every `dblink_*` counts too: what runs
    /// remotely is unknown. A call to any of them makes the statement `writes`.
    public static let writing: Set<String> = controlsServer.subtracting(["set_config"]).union([
        "nextval", "setval",
        "lo_create", "lo_creat", "lo_import", "lo_export", "lo_unlink", "lo_put", "lo_from_bytea",
        "lowrite", "lo_truncate", "lo_truncate64",
        "pg_file_write", "pg_file_rename", "pg_file_unlink", "pg_file_sync",
        "pg_notify", "dblink",
        "pg_stat_reset", "pg_stat_reset_shared", "pg_stat_reset_single_table_counters",
        "pg_stat_reset_single_function_counters", "pg_stat_reset_slru",
        "pg_stat_reset_replication_slot", "pg_stat_reset_subscription_stats",
        "pg_import_system_collations",
        "pg_replication_origin_create", "pg_replication_origin_drop",
        "pg_replication_origin_advance",
    ])

    /// Settings whose change changes who the session acts as.
    static let identitySettings: Set<String> = ["role", "session_authorization"]

    /// dblink's functions all start with `dblink_` (dblink_exec, dblink_open, dblink_send_query…).
    static func isDblink(_ name: String) -> Bool {
        name == "dblink" || name.hasPrefix("dblink_")
    }

    static func isDangerous(_ name: String) -> Bool {
        dangerous.contains(name) || isDblink(name)
    }

    static func runsSQL(_ name: String) -> Bool {
        runsSQLText.contains(name) || isDblink(name)
    }

    static func writes(_ name: String) -> Bool {
        writing.contains(name) || isDblink(name)
    }
}
