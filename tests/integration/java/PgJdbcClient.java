import java.io.StringReader;
import java.io.StringWriter;
import java.sql.*;
import java.util.concurrent.atomic.AtomicReference;

import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

/**
 * Drives PgJDBC through one session and prints what it saw, one `key=value` line at a time, so a
 * test can compare a run through the gateway with a run straight against PostgreSQL.
 *
 * Usage: java -cp postgresql.jar:DIR PgJdbcClient JDBC_URL USER PASSWORD
 */
public class PgJdbcClient {
    static void out(String key, Object value) {
        System.out.println(key + "=" + value);
    }

    public static void main(String[] args) throws Exception {
        String url = args[0], user = args[1], password = args[2];
        try (Connection c = DriverManager.getConnection(url, user, password)) {
            // A plain query (simple protocol for a Statement without parameters).
            try (Statement s = c.createStatement();
                 ResultSet r = s.executeQuery("SELECT id, full_name, email FROM customers ORDER BY id LIMIT 3")) {
                while (r.next()) out("plain", r.getInt(1) + "|" + r.getString(2) + "|" + r.getString(3));
            }

            // One PreparedStatement executed 10 times: PgJDBC switches to a named server-side
            // statement after prepareThreshold (5) executions.
            try (PreparedStatement ps = c.prepareStatement("SELECT id, email FROM customers WHERE id = ?")) {
                for (int i = 1; i <= 10; i++) {
                    ps.setInt(1, i);
                    try (ResultSet r = ps.executeQuery()) {
                        r.next();
                        out("prepared" + i, r.getInt(1) + "|" + r.getString(2));
                    }
                }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT count(*) FROM orders WHERE status = ?")) {
                for (String status : new String[] {"paid", "shipped", "pending", "paid", "refunded", "paid", "delivered"}) {
                    ps.setString(1, status);
                    try (ResultSet r = ps.executeQuery()) {
                        r.next();
                        out("status_" + status, r.getLong(1));
                    }
                }
            }
            try (Statement s = c.createStatement();
                 ResultSet r = s.executeQuery(
                     "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%FROM customers WHERE id = $1%'")) {
                r.next();
                out("server_prepared", r.getLong(1) > 0);
            }

            // A transaction rolled back, then one committed.
            String currency;
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT value FROM app_config WHERE key = 'currency'")) {
                r.next();
                currency = r.getString(1);
            }
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("UPDATE app_config SET value = ? WHERE key = 'currency'")) {
                ps.setString(1, "XXX");
                out("rollback_updated", ps.executeUpdate());
            }
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT value FROM app_config WHERE key = 'currency'")) {
                r.next();
                out("inside_tx", r.getString(1));
            }
            c.rollback();
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT value FROM app_config WHERE key = 'currency'")) {
                r.next();
                out("after_rollback_unchanged", r.getString(1).equals(currency));
            }
            c.commit();
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TEMP TABLE jdbc_t (a int, b text)");
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_t VALUES (?, ?)")) {
                    for (int i = 1; i <= 3; i++) {
                        ps.setInt(1, i);
                        ps.setString(2, "row " + i);
                        ps.addBatch();
                    }
                    int total = 0;
                    for (int n : ps.executeBatch()) total += n;
                    out("batch_inserted", total);
                }
            }
            c.commit();
            c.setAutoCommit(true);
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT count(*), string_agg(b, ',' ORDER BY a) FROM jdbc_t")) {
                r.next();
                out("after_commit", r.getLong(1) + "|" + r.getString(2));
            }

            // COPY both ways.
            CopyManager copy = c.unwrap(PGConnection.class).getCopyAPI();
            StringBuilder data = new StringBuilder();
            for (int i = 100; i < 1100; i++) data.append(i).append("\tcopied ").append(i).append('\n');
            out("copy_in", copy.copyIn("COPY jdbc_t FROM STDIN", new StringReader(data.toString())));
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT count(*), sum(a) FROM jdbc_t")) {
                r.next();
                out("after_copy_in", r.getLong(1) + "|" + r.getLong(2));
            }
            StringWriter sink = new StringWriter();
            out("copy_out", copy.copyOut("COPY (SELECT id, email FROM customers ORDER BY id LIMIT 4) TO STDOUT", sink));
            for (String line : sink.toString().split("\n")) out("copy_out_line", line.replace('\t', '|'));

            // A cancel from another thread while the server sleeps.
            try (Statement s = c.createStatement()) {
                AtomicReference<Throwable> cancelError = new AtomicReference<>();
                Thread canceller = new Thread(() -> {
                    try {
                        Thread.sleep(1000);
                        s.cancel();
                    } catch (Throwable t) {
                        cancelError.set(t);
                    }
                });
                long started = System.nanoTime();
                canceller.start();
                try {
                    s.executeQuery("SELECT pg_sleep(30)");
                    out("cancel", "not cancelled");
                } catch (SQLException e) {
                    out("cancel_sqlstate", e.getSQLState());
                }
                canceller.join();
                long millis = (System.nanoTime() - started) / 1_000_000;
                out("cancel_fast", millis < 15_000);
                out("cancel_error", cancelError.get());
            }
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT 'still usable'")) {
                r.next();
                out("after_cancel", r.getString(1));
            }
        }
        out("done", true);
    }
}
