use agents_runtime::TypeScript;

#[derive(TypeScript)]
enum Shape {
    Circle { radius: f64 },
    Square,
}

fn main() {}
