fn main() {
    for f in std::env::args().skip(1) {
        let s = apache_avro::Schema::parse_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        println!("{f} {}", clickpath_schema::registry::fingerprint(&s));
    }
}
