import java.sql.*;

/**
 * Reads masked columns through PgJDBC, plain and prepared (past prepareThreshold, so named
 * server-side statements and binary transfer), and tries a refused statement, printing
 * `key=value` lines for the test to check.
 *
 * Usage: java -cp postgresql.jar:DIR PgJdbcMasked JDBC_URL USER PASSWORD
 */
public class PgJdbcMasked {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], args[1], args[2])) {
            try (Statement s = c.createStatement();
                 ResultSet r = s.executeQuery("SELECT id, email, card_number FROM customers ORDER BY id LIMIT 3")) {
                while (r.next()) System.out.println("plain=" + r.getInt(1) + "|" + r.getString(2) + "|" + r.getString(3));
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT id, email, card_number, upper(email) FROM customers WHERE id = ?")) {
                for (int i = 1; i <= 8; i++) {
                    ps.setInt(1, i);
                    try (ResultSet r = ps.executeQuery()) {
                        r.next();
                        System.out.println("prepared" + i + "=" + r.getInt(1) + "|" + r.getString(2) + "|" + r.getString(3) + "|" + r.getString(4));
                    }
                }
            }
            try (Statement s = c.createStatement()) {
                s.execute("DROP TABLE customers");
                System.out.println("drop=ran");
            } catch (SQLException e) {
                System.out.println("drop=" + e.getSQLState());
            }
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT count(*) FROM customers")) {
                r.next();
                System.out.println("after=" + r.getLong(1));
            }
        }
    }
}
