use sqlparser::dialect::MySqlDialect;
use sqlparser::tokenizer::Tokenizer;
fn main() {
    for s in ["SELECT ... FROM t", "SELECT 1e3, 0x1F, X'0A', b'01', _utf8mb4'x', N'y', -5, 1.5e-3, .5"] {
        println!("{:?}", Tokenizer::new(&MySqlDialect{}, s).tokenize().unwrap());
    }
    let e = serde_saphyr::from_str::<std::collections::BTreeMap<String,String>>("");
    println!("{:?}", e.map_err(|e| e.to_string()));
    #[derive(serde::Deserialize, Debug)] struct F { #[serde(default)] tables: Vec<String> }
    println!("{:?}", serde_saphyr::from_str::<F>("# just a comment\n").map_err(|e| e.to_string()));
    println!("{:?}", serde_saphyr::from_str::<Option<F>>("# just a comment\n").map_err(|e| e.to_string()));
}
